-- A station job's window writes, in one call: every ok module's output and every order
-- cursor its modules moved (also behind WindowStore.store_output / advance_cursor).
-- KEYS[1] meta hash, then n output lists, then m order state hashes (all tagged {station})
-- ARGV: n, ts_ms, keep, then n x (module, item, retention_ms or ''),
--       then m x (module, seq, retention_ms or '')
-- Returns the cursor of each state key after the call (never moved back).
local n = tonumber(ARGV[1])
local ts = ARGV[2]
local keep = tonumber(ARGV[3])
local a = 4
for i = 1, n do
  local key = KEYS[1 + i]
  redis.call('LPUSH', key, ARGV[a + 1])
  redis.call('LTRIM', key, 0, keep - 1)
  if ARGV[a + 2] ~= '' then redis.call('PEXPIRE', key, ARGV[a + 2]) end
  redis.call('HSET', KEYS[1], 'ts:' .. ARGV[a], ts)
  a = a + 3
end
local out = {}
for j = 2 + n, #KEYS do
  local f = 'cur:' .. ARGV[a]
  local seq = tonumber(ARGV[a + 1])
  local c = tonumber(redis.call('HGET', KEYS[j], f) or '0')
  if seq > c then
    redis.call('HSET', KEYS[j], f, ARGV[a + 1])
    if ARGV[a + 2] ~= '' then redis.call('PEXPIRE', KEYS[j], ARGV[a + 2]) end
    c = seq
  end
  out[#out + 1] = c
  a = a + 3
end
return out
