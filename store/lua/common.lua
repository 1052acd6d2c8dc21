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
-- the timer), so that a replay of that message can report the same triggers.
local function closed_member(seq, second, late, src, ts, cause, blob)
  return seq .. '|' .. second .. '|' .. late .. '|' .. src .. '|' .. ts .. '|' .. cause .. '|' .. blob
end

-- Keep the newest `cap` closed seconds. Sequence numbers are consecutive and seconds only
-- leave from the oldest end, so the evicted ones are (seq - card, seq - cap]; a second is
-- undelivered when some module's cursor is below it. Returns that count.
local function evict_seconds(wkey, seq, card, cap, cursors)
  if card <= cap then return 0 end
  local lowest = seq - card + 1
  local top = seq - cap
  redis.call('ZREMRANGEBYSCORE', wkey, '-inf', top)
  if #cursors == 0 then return 0 end
  local low = cursors[1]
  for _, c in ipairs(cursors) do if c < low then low = c end end
  local from = lowest - 1
  if low > from then from = low end
  if top > from then return top - from end
  return 0
end
