-- Close a station's open order second if it is still `second` and its deadline passed.
-- KEYS[1] orders state hash (<wkey>:st)  KEYS[2] closed seconds zset (wkey)  KEYS[3] closers
-- zset (<wkey>:cb): every key it touches is declared (one station's slot)
-- ARGV: now_ms second cap modules_csv retention_ms
-- Returns {done} or {done, seq, second, late, src, ts, evicted_undelivered}; done = 0 means
-- "not yet due, keep the index entry". Atomic: several closers may call it, one closes.
local st, wkey, cbkey = KEYS[1], KEYS[2], KEYS[3]
local now, sec, cap, mods, ret = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), csv(ARGV[4]), ARGV[5]
local names = {'open', 'deadline', 'open_src', 'open_ts', 'last_closed', 'open_items'}
for _, m in ipairs(mods) do names[#names + 1] = 'cur:' .. m end
local f = redis.call('HMGET', st, unpack(names))
if not f[1] or f[1] ~= sec then return {1} end
if tonumber(f[2]) > now then return {0} end
local cursors = {}
for i = 1, #mods do cursors[i] = tonumber(f[6 + i]) or 0 end
local seq = redis.call('HINCRBY', st, 'seq', 1)
redis.call('ZADD', wkey, seq, closed_member(seq, sec, '0', f[3], f[4], '', f[6] or ''))
redis.call('HDEL', st, 'open', 'deadline', 'open_src', 'open_ts', 'open_items')
if not f[5] or tonumber(sec) > tonumber(f[5]) then redis.call('HSET', st, 'last_closed', sec) end
local card = redis.call('ZCARD', wkey)
local ev = evict_seconds(wkey, seq, card, cap, cursors)
if card > cap then redis.call('ZREMRANGEBYSCORE', cbkey, '-inf', seq - cap) end
if ret ~= '' then
  redis.call('PEXPIRE', wkey, ret)
  redis.call('PEXPIRE', st, ret)
end
return {1, seq, sec, '0', f[3], f[4], ev}
