-- Shared by the window scripts. Numbers travel as strings (ARGV) and are compared with
-- tonumber(); values written back are the original strings, so no float formatting occurs.
local unpack = unpack or table.unpack

local function csv(s)
  local out = {}
  if not s or s == '' then return out end
  for part in string.gmatch(s, '[^,]+') do out[#out + 1] = part end
  return out
end

-- A closed order second is one zset member of `wkey` scored by its sequence number:
-- 'seq|second|late|src|ts|cause|' .. the concatenated msgpack items. `src`/`ts` are the last
-- order included (the trigger source), `cause` the message whose arrival closed it ('' for
-- the timer). `wkey:cb` maps a closing message to the first sequence number it closed, so a
-- replay of that message can report the same triggers.
local function closed_member(seq, second, late, src, ts, cause, blob)
  return seq .. '|' .. second .. '|' .. late .. '|' .. src .. '|' .. ts .. '|' .. cause .. '|' .. blob
end

-- Keep the newest `cap` closed seconds; returns how many evicted ones some module had not
-- received yet (its cursor, `cur:<module>` in the state hash, is below the sequence number).
local function evict_seconds(wkey, st, card, cap, mods)
  if card <= cap then return 0 end
  local k = card - cap
  local gone = redis.call('ZRANGE', wkey, 0, k - 1, 'WITHSCORES')
  local curs = {}
  if #mods > 0 then
    local names = {}
    for i, m in ipairs(mods) do names[i] = 'cur:' .. m end
    local raw = redis.call('HMGET', st, unpack(names))
    for i = 1, #mods do curs[i] = tonumber(raw[i]) or 0 end
  end
  local undelivered, top = 0, 0
  for i = 1, #gone, 2 do
    local seq = tonumber(gone[i + 1])
    if seq > top then top = seq end
    for _, c in ipairs(curs) do
      if c < seq then undelivered = undelivered + 1; break end
    end
  end
  redis.call('ZREMRANGEBYRANK', wkey, 0, k - 1)
  redis.call('ZREMRANGEBYSCORE', wkey .. ':cb', '-inf', top)
  return undelivered
end
