-- uploading -> uploaded (or skipped); only the first caller wins, so counts are taken once.
-- KEYS[1] batch hash
-- ARGV: new_state, now_ms, keep_ms
-- Returns 1 when this call made the move, 0 otherwise.
local b = KEYS[1]
if redis.call('HGET', b, 'state') ~= 'uploading' then
  return 0
end
redis.call('HSET', b, 'state', ARGV[1], 'finished', ARGV[2])
redis.call('PEXPIRE', b, ARGV[3])
return 1
