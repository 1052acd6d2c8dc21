-- Shared by the window scripts. Numbers travel as strings (ARGV) and are compared with
-- tonumber(); values written back are the original strings, so no float formatting occurs.
local unpack = unpack or table.unpack

local function csv(s)
  local out = {}
  if not s or s == '' then return out end
  for part in string.gmatch(s, '[^,]+') do out[#out + 1] = part end
  return out
end

-- Close the open second of an orders window: give it the next sequence number, store it as
-- one zset member 'seq|second|late|src|ts|cause|' .. items, remember which message closed it.
local function close_second(zkey, st, second, late, blob, src, ts, cause)
  local seq = redis.call('HINCRBY', st, 'seq', 1)
  local member = seq .. '|' .. second .. '|' .. late .. '|' .. src .. '|' .. ts .. '|' .. cause .. '|' .. blob
  redis.call('ZADD', zkey, seq, member)
  if cause ~= '' then
    local f = 'cb:' .. cause
    local prev = redis.call('HGET', st, f)
    if prev then redis.call('HSET', st, f, prev .. ',' .. seq) else redis.call('HSET', st, f, seq) end
  end
  if late == '0' then
    local lc = tonumber(redis.call('HGET', st, 'last_closed'))
    if lc == nil or tonumber(second) > lc then redis.call('HSET', st, 'last_closed', second) end
  end
  return seq
end

local function close_open(zkey, st, okey, cause)
  local f = redis.call('HMGET', st, 'open', 'open_src', 'open_ts')
  local blob = table.concat(redis.call('LRANGE', okey, 0, -1))
  local seq = close_second(zkey, st, f[1], '0', blob, f[2], f[3], cause)
  redis.call('DEL', okey)
  redis.call('HDEL', st, 'open', 'deadline', 'open_src', 'open_ts')
  return {seq, f[1], '0', f[2], f[3]}
end

-- Keep the newest `cap` closed seconds; return how many evicted ones some module had not
-- yet received (its cursor is below the second's sequence number).
local function evict_seconds(zkey, st, cap, mods)
  local n = redis.call('ZCARD', zkey)
  if n <= cap then return 0 end
  local gone = redis.call('ZRANGE', zkey, 0, n - cap - 1, 'WITHSCORES')
  local curs = {}
  for i, m in ipairs(mods) do curs[i] = tonumber(redis.call('HGET', st, 'cur:' .. m) or '0') end
  local undelivered = 0
  for i = 1, #gone, 2 do
    local seq = tonumber(gone[i + 1])
    for _, c in ipairs(curs) do
      if c < seq then undelivered = undelivered + 1; break end
    end
    local cause = string.match(gone[i], '^[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|([^|]*)|')
    if cause and cause ~= '' then redis.call('HDEL', st, 'cb:' .. cause) end
  end
  redis.call('ZREMRANGEBYRANK', zkey, 0, n - cap - 1)
  return undelivered
end
