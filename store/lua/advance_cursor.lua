-- Move a module's delivery cursor forward (never back). KEYS[1] state hash  ARGV: module seq retention_ms
local f = 'cur:' .. ARGV[1]
local c = tonumber(redis.call('HGET', KEYS[1], f) or '0')
if tonumber(ARGV[2]) > c then
  redis.call('HSET', KEYS[1], f, ARGV[2])
  if ARGV[3] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
  return tonumber(ARGV[2])
end
return c
