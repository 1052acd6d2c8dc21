-- One station's report to one batch, atomically.
-- KEYS[1] batch hash
-- ARGV: station, outcome (ok|none|failed), result_json, reason, now_ms, keep_ms,
--       nonfinite (count), mismatch (0/1), wrapped (0/1)
-- Returns {status} or, when this report completes the batch, {"claimed", field, value, ...}
-- (the whole hash, so the caller can upload without another round trip) or {"skipped"}.
-- status: unknown (no such batch), not_expected, duplicate, late, recorded.
local b = KEYS[1]
if redis.call('EXISTS', b) == 0 then
  return {'unknown'}
end
local f = 'e:' .. ARGV[1]
local st = redis.call('HGET', b, f)
if not st then
  return {'not_expected'}
end
if st ~= '-' then
  return {'duplicate'}
end
local outcome = ARGV[2]
local label = outcome
if outcome == 'failed' then
  label = 'failed:' .. ARGV[4]
end
redis.call('HSET', b, f, label)
if redis.call('HGET', b, 'state') ~= 'open' then
  redis.call('HINCRBY', b, 'late', 1)
  return {'late'}
end
if outcome == 'ok' then
  redis.call('HSET', b, 'r:' .. ARGV[1], ARGV[3])
  redis.call('HINCRBY', b, 'ok', 1)
  local nf = tonumber(ARGV[7])
  if nf > 0 then redis.call('HINCRBY', b, 'nonfinite', nf) end
  if ARGV[8] == '1' then redis.call('HINCRBY', b, 'station_id_mismatch', 1) end
  if ARGV[9] == '1' then redis.call('HINCRBY', b, 'wrapped', 1) end
elseif outcome == 'none' then
  redis.call('HINCRBY', b, 'none', 1)
else
  redis.call('HINCRBY', b, 'failed', 1)
  redis.call('HINCRBY', b, 'f:' .. ARGV[4], 1)
end
local n = redis.call('HINCRBY', b, 'reported', 1)
if n < tonumber(redis.call('HGET', b, 'n_expected')) then
  return {'recorded'}
end
redis.call('HSET', b, 'completed', ARGV[5], 'timed_out', 0)
if tonumber(redis.call('HGET', b, 'ok')) == 0 and redis.call('HGET', b, 'upload_empty') ~= '1' then
  redis.call('HSET', b, 'state', 'skipped', 'finished', ARGV[5])
  redis.call('PEXPIRE', b, ARGV[6])
  return {'skipped'}
end
redis.call('HSET', b, 'state', 'uploading', 'claimed', ARGV[5])
local out = {'claimed'}
local all = redis.call('HGETALL', b)
for i = 1, #all do out[#out + 1] = all[i] end
return out
