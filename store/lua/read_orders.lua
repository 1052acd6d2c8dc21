-- The closed order seconds after each module's delivery cursor, in one call.
-- KEYS[1] closed zset (wkey)  KEYS[2] state hash   ARGV: modules
-- Returns {cursors..., members...} with members after the lowest cursor, oldest first.
local out = {}
local low = nil
for i, m in ipairs(ARGV) do
  local c = tonumber(redis.call('HGET', KEYS[2], 'cur:' .. m) or '0')
  out[i] = c
  if low == nil or c < low then low = c end
end
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (low or 0), '+inf')
for _, m in ipairs(members) do out[#out + 1] = m end
return out
