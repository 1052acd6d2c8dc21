-- KEYS[1] pending hash, KEYS[2] rate hash, KEYS[3] meta hash (replay marks, store.marks);
-- ARGV: proposed job id, expire_ms, now_ms, n, then n mark field, offset pairs to advance,
-- then module, batch_id, deadline_ms, min_interval_ms, mark field ('' = not gated), offset
-- per run.
-- Returns {job_id ('' when no run needs a job now), new (1 = this call claimed the job slot),
-- next deferred run ms (-1: none), then flag, not-before ms per run}. Flags:
-- 1 = now pending, 2 = already pending or deferred with the same batch (a replay),
-- 0 = absorbed by the pending run, 3 = absorbed by the deferred run (rate limit),
-- 4 = deferred: pending from its not-before ms (the last release + the interval),
-- 5 = scheduled already: its message is at or below the mark and no run of its batch is
--     held here any more (a job took it), so nothing is scheduled again.
-- A gated run whose message is at or below the mark is a redelivery: still held (reserved,
-- committed or deferred: the scheduler stopped before its batch, commit or job) it is a
-- replay (2) and the scheduling carries on; otherwise 5. The marks move in this same script.
-- A pending run absorbs a trigger only while its batch is open (`_d:<module>` = that batch's
-- deadline): a run whose batch has closed (expired while the job waited) is moved to the new
-- batch instead, so the new message's batch expects the station and gets its result. A
-- deferred run's deadline already covers its deferral.
-- A new pending run is *reserved* ("?<batch>"): no job takes it before `commit` (called once
-- its batch exists), so a job never reports to a batch that is not there yet.
local pk, rk, mk = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[3])
local nmarks = tonumber(ARGV[4])
local function holds(v, b)
  if not v then return false end
  if string.sub(v, 1, 1) == '?' then v = string.sub(v, 2) end
  return string.find(' ' .. v .. ' ', ' ' .. b .. ' ', 1, true) ~= nil
end
local out = {}
local needs_job = false
local deferred = false
for i = 5 + 2 * nmarks, #ARGV, 6 do
  local m, b, dl, iv = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local gf = ARGV[i + 4]
  local cur = redis.call('HGET', pk, m)
  local dcur = redis.call('HGET', rk, m)
  local flag, nb = 1, 0
  local seen = gf ~= '' and tonumber(redis.call('HGET', mk, gf) or '-1') >= tonumber(ARGV[i + 5])
  if seen then
    if holds(cur, b) then
      flag = 2
      needs_job = true
    elseif dcur == b then
      flag, nb = 2, tonumber(redis.call('HGET', rk, '_n:' .. m))
    else
      flag = 5
    end
  elseif cur == b or cur == '?' .. b then
    flag = 2
    needs_job = true
  elseif dcur == b then
    flag, nb = 2, tonumber(redis.call('HGET', rk, '_n:' .. m))
  elseif cur and tonumber(redis.call('HGET', pk, '_d:' .. m) or '0') > now then
    flag = 0
    needs_job = true
  elseif dcur and tonumber(redis.call('HGET', rk, '_d:' .. m) or '0') > now then
    flag, nb = 3, tonumber(redis.call('HGET', rk, '_n:' .. m))
  elseif dcur then
    -- a deferred run whose batch closed (its release came late): it moves to this batch
    nb = tonumber(redis.call('HGET', rk, '_n:' .. m))
    flag = 4
    local ext = dl + math.max(0, nb - now)
    redis.call('HSET', rk, m, b, '_d:' .. m, ext)
  else
    local last = tonumber(redis.call('HGET', rk, '_l:' .. m) or '-1')
    if not cur and iv > 0 and last >= 0 and last + iv > now then
      flag, nb = 4, last + iv
      redis.call('HSET', rk, m, b, '_d:' .. m, dl + (nb - now), '_n:' .. m, nb)
    else
      redis.call('HSET', pk, m, '?' .. b, '_d:' .. m, dl)
      if iv > 0 then redis.call('HSET', rk, '_l:' .. m, now) end
      needs_job = true
    end
  end
  if flag == 3 or flag == 4 or (flag == 2 and nb > 0) then deferred = true end
  out[#out + 1] = flag
  out[#out + 1] = nb
end
if nmarks > 0 and redis.call('EXISTS', mk) == 1 then
  for i = 5, 4 + 2 * nmarks, 2 do
    local v = redis.call('HGET', mk, ARGV[i])
    if not v or tonumber(v) < tonumber(ARGV[i + 1]) then redis.call('HSET', mk, ARGV[i], ARGV[i + 1]) end
  end
end
local job, new = '', 0
if needs_job then
  job = redis.call('HGET', pk, '_job')
  if not job then
    job = ARGV[1]
    new = 1
    redis.call('HSET', pk, '_job', job)
  end
  redis.call('PEXPIRE', pk, ARGV[2])
end
local next_due = -1
if deferred then
  for _, f in ipairs(redis.call('HKEYS', rk)) do
    if string.sub(f, 1, 3) == '_n:' then
      local v = tonumber(redis.call('HGET', rk, f))
      if next_due < 0 or v < next_due then next_due = v end
    end
  end
end
redis.call('PEXPIRE', rk, ARGV[2])
local head = {job, new, next_due}
for _, v in ipairs(out) do head[#head + 1] = v end
return head
