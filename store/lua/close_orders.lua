-- Close a station's open order second if it is still `second` and its deadline passed.
-- KEYS[1] orders state hash (<wkey>:st)   ARGV: wkey now_ms second cap modules_csv retention_ms
-- Returns {done} or {done, seq, second, late, src, ts, evicted_undelivered}; done = 0 means
-- "not yet due, keep the index entry". Atomic: several closers may call it, one closes.
local st = KEYS[1]
local wkey, now, sec, cap, mods, ret = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local f = redis.call('HMGET', st, 'open', 'deadline', 'open_src', 'open_ts', 'last_closed')
if not f[1] or f[1] ~= sec then return {1} end
if tonumber(f[2]) > now then return {0} end
local okey = wkey .. ':open'
local seq = redis.call('HINCRBY', st, 'seq', 1)
local blob = table.concat(redis.call('LRANGE', okey, 0, -1))
redis.call('ZADD', wkey, seq, closed_member(seq, sec, '0', f[3], f[4], '', blob))
redis.call('DEL', okey)
redis.call('HDEL', st, 'open', 'deadline', 'open_src', 'open_ts')
if not f[5] or tonumber(sec) > tonumber(f[5]) then redis.call('HSET', st, 'last_closed', sec) end
local ev = evict_seconds(wkey, st, redis.call('ZCARD', wkey), cap, csv(mods))
if ret ~= '' then
  redis.call('PEXPIRE', wkey, ret)
  redis.call('PEXPIRE', st, ret)
end
return {1, seq, sec, '0', f[3], f[4], ev}
