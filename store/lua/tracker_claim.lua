-- The sweeper's move for one batch found in the due index; safe with any number of sweepers.
-- KEYS[1] batch hash
-- ARGV: now_ms, reclaim_after_ms, keep_ms
-- Returns {"claimed"|"reclaimed", field, value, ...} (caller uploads), {"skipped"},
-- {"notdue", score} / {"busy", score} (caller re-scores the index), {"done"} or {"gone"}.
local b = KEYS[1]
local now = tonumber(ARGV[1])
local state = redis.call('HGET', b, 'state')
if not state then
  return {'gone'}
end
local status
if state == 'open' then
  local deadline = tonumber(redis.call('HGET', b, 'deadline'))
  if deadline > now then
    return {'notdue', tostring(deadline)}
  end
  local missing = tonumber(redis.call('HGET', b, 'n_expected')) - tonumber(redis.call('HGET', b, 'reported'))
  redis.call('HSET', b, 'completed', ARGV[1], 'timed_out', missing, 'expired', 1)
  if tonumber(redis.call('HGET', b, 'ok')) == 0 and redis.call('HGET', b, 'upload_empty') ~= '1' then
    redis.call('HSET', b, 'state', 'skipped', 'finished', ARGV[1])
    redis.call('PEXPIRE', b, ARGV[3])
    return {'skipped', tostring(missing)}
  end
  redis.call('HSET', b, 'state', 'uploading', 'claimed', ARGV[1])
  status = 'claimed'
elseif state == 'uploading' then
  local due = tonumber(redis.call('HGET', b, 'claimed')) + tonumber(ARGV[2])
  if due > now then
    return {'busy', tostring(due)}
  end
  redis.call('HSET', b, 'claimed', ARGV[1])
  redis.call('HINCRBY', b, 'reclaims', 1)
  status = 'reclaimed'
else
  return {'done'}
end
local out = {status}
local all = redis.call('HGETALL', b)
for i = 1, #all do out[#out + 1] = all[i] end
return out
