-- The closed order seconds after each module's delivery cursor, in one call.
-- KEYS[1] closed zset (wkey)  KEYS[2] state hash   ARGV: modules
-- Returns {n_stored, cursors..., members...} with members after the lowest cursor, oldest
-- first; n_stored = 0 tells "no closed second at all" from "none new for these modules".
local out = {redis.call('ZCARD', KEYS[1])}
local low = nil
for i, m in ipairs(ARGV) do
  local c = tonumber(redis.call('HGET', KEYS[2], 'cur:' .. m) or '0')
  out[i + 1] = c
  if low == nil or c < low then low = c end
end
if out[1] == 0 then return out end
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (low or 0), '+inf')
for _, m in ipairs(members) do out[#out + 1] = m end
return out
