-- Create a batch if it does not exist yet (a replayed source message creates nothing new).
-- KEYS[1] batch hash
-- ARGV: module, created_ms, deadline_ms, upload_empty (0/1), expire_ms, expected_json, station...
-- Each expected station gets a field "e:<station>" = "-" until it reports; membership and
-- duplicate checks are then O(1) per report whatever the batch size.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local n = #ARGV - 6
redis.call('HSET', KEYS[1],
  'module', ARGV[1], 'state', 'open', 'created', ARGV[2], 'deadline', ARGV[3],
  'upload_empty', ARGV[4], 'expected', ARGV[6], 'n_expected', n,
  'reported', 0, 'ok', 0, 'none', 0, 'failed', 0, 'late', 0)
local chunk = {}
for i = 7, #ARGV do
  chunk[#chunk + 1] = 'e:' .. ARGV[i]
  chunk[#chunk + 1] = '-'
  if #chunk >= 1000 then
    redis.call('HSET', KEYS[1], unpack(chunk))
    chunk = {}
  end
end
if #chunk > 0 then
  redis.call('HSET', KEYS[1], unpack(chunk))
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
