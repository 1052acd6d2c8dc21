-- Apply one poll's records of ONE station (or one global alias) atomically.
-- KEYS[1] meta hash: hwm:<topic>:<partition> offset high-water marks, ts:<alias> newest record
--         ms, hn:/hc:<alias> newest stored hour and the oldest hour kept, x:<alias> when the
--         alias's keys last had their TTL set (refreshed every retention/64, or on creation).
-- ARGV: now_ms, meta_retention_ms ('' = never), n_aliases, then per alias 7 fields
--   (alias kind wkey retention_ms cap x1 x2), n_partitions, then per partition 'topic:partition',
--   then per record, in offset order, 6 fields: alias_index partition_index offset key item ts.
-- x1/x2: devices x1 = ttl ms; orders x1 = close ms, x2 = modules csv. Hourly keys are
--   'hour|oldest hour kept when this hour is the newest'.
-- Returns {status, closes, evicted}: status has one char per record (a applied, s superseded by
-- newer data, r replay skipped, i outside the window, l late order); closes is flat
-- {record_index, seq, second, late, src, ts} per closed order second; evicted is flat
-- {alias_index, n} of closed seconds evicted before every module received them.
local meta = KEYS[1]
local now = tonumber(ARGV[1])
local meta_ret = ARGV[2]
local pos = 3
local A = {}
local na = tonumber(ARGV[pos]); pos = pos + 1
for i = 1, na do
  A[i] = {alias = ARGV[pos], kind = ARGV[pos + 1], wkey = ARGV[pos + 2], ret = ARGV[pos + 3],
          cap = tonumber(ARGV[pos + 4]), x1 = ARGV[pos + 5], x2 = ARGV[pos + 6], idx = i}
  pos = pos + 7
end
local P = {}
local np = tonumber(ARGV[pos]); pos = pos + 1
for i = 1, np do P[i] = ARGV[pos]; pos = pos + 1 end
local first_rec = pos
local n = (#ARGV - first_rec + 1) / 6

local status, closes, evicted = {}, {}, {}
local hwm, applying = {}, {}
local meta_out = {}

-- every meta field this call may need, in one read
local mnames = {}
for i = 1, np do mnames[#mnames + 1] = 'hwm:' .. P[i] end
for _, a in ipairs(A) do
  mnames[#mnames + 1] = 'ts:' .. a.alias
  mnames[#mnames + 1] = 'x:' .. a.alias
  if a.kind == 'hourly' then
    mnames[#mnames + 1] = 'hn:' .. a.alias
    mnames[#mnames + 1] = 'hc:' .. a.alias
  end
end
local M = {}
local mvals = redis.call('HMGET', meta, unpack(mnames))
for i, f in ipairs(mnames) do M[f] = mvals[i] end
for i = 1, np do hwm['hwm:' .. P[i]] = tonumber(M['hwm:' .. P[i]]) or -1 end

local function add_close(idx, seq, sec, late, src, ts)
  local c = closes
  c[#c + 1] = idx; c[#c + 1] = seq; c[#c + 1] = sec; c[#c + 1] = late; c[#c + 1] = src; c[#c + 1] = ts
end

-- per-alias state, loaded on first use and written back once at the end
local function init(a)
  if a.loaded then return a end
  a.loaded = true
  local k = a.kind
  a.ts = tonumber(M['ts:' .. a.alias])
  local stamp = tonumber(M['x:' .. a.alias])
  a.refresh = a.ret ~= '' and (stamp == nil or now - stamp >= tonumber(a.ret) / 64)
  if k == 'hourly' then
    a.tkey = a.wkey .. ':ts'
    if redis.call('EXISTS', a.wkey) == 1 then a.hn, a.hc = M['hn:' .. a.alias], M['hc:' .. a.alias]
    else a.created = true end
  elseif k == 'devices' then
    a.tkey = a.wkey .. ':ts'
    if a.x1 ~= '' then
      local cutoff = now - tonumber(a.x1)
      a.cutoff = cutoff
      local old = redis.call('ZRANGEBYSCORE', a.tkey, '-inf', '(' .. cutoff)
      if #old > 0 then
        redis.call('HDEL', a.wkey, unpack(old))
        redis.call('ZREMRANGEBYSCORE', a.tkey, '-inf', '(' .. cutoff)
      end
    end
    a.card = redis.call('ZCARD', a.tkey)
    if a.card == 0 then a.created = true end
  elseif k == 'global' then
    a.tkey = a.wkey .. ':ts'
    a.created = true
  elseif k == 'append' or k == 'output' then
    a.items = {}
    a.created = true
  elseif k == 'orders' then
    a.st, a.cbkey = a.wkey .. ':st', a.wkey .. ':cb'
    a.mods = csv(a.x2)
    local names = {'open', 'deadline', 'last_closed', 'seq', 'open_src', 'open_ts', 'open_items'}
    for _, m in ipairs(a.mods) do names[#names + 1] = 'cur:' .. m end
    local f = redis.call('HMGET', a.st, unpack(names))
    a.open, a.deadline, a.last_closed = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
    a.open_s, a.deadline_s, a.last_closed_s = f[1], f[2], f[3]
    a.had_open = f[1] and true or false
    a.seq = tonumber(f[4]) or 0
    a.open_src, a.open_ts, a.open_blob = f[5], f[6], f[7] or ''
    a.cursors = {}
    for i = 1, #a.mods do a.cursors[i] = tonumber(f[7 + i]) or 0 end
    a.cb_seen = {}
    a.card = redis.call('ZCARD', a.wkey)
    if a.card == 0 or a.seq == 0 then a.created = true end
    a.close_ms = tonumber(a.x1)
  end
  return a
end

local function bump_ts(a, ts, nts)
  if a.ts == nil or nts > a.ts then a.ts = nts; a.ts_s = ts end
end

local function close_bucket(a, idx, sec, late, blob, src, ts, cause)
  a.seq = a.seq + 1
  redis.call('ZADD', a.wkey, a.seq, closed_member(a.seq, sec, late, src, ts, cause, blob))
  if cause ~= '' and not a.cb_seen[cause] then
    a.cb_seen[cause] = true
    redis.call('ZADD', a.cbkey, a.seq, cause)
  end
  if late == '0' and (a.last_closed == nil or tonumber(sec) > a.last_closed) then
    a.last_closed, a.last_closed_s = tonumber(sec), sec
  end
  a.card = a.card + 1
  a.dirty = true
  add_close(idx, a.seq, sec, late, src, ts)
end

local function close_open(a, idx, cause)
  close_bucket(a, idx, a.open_s, '0', a.open_blob, a.open_src, a.open_ts, cause)
  a.open, a.open_s, a.open_blob = nil, nil, ''
end

local function apply_order(a, idx, sec_s, item, ts, src)
  local sec = tonumber(sec_s)
  if a.open and a.deadline <= now then close_open(a, idx, src) end
  local late = false
  if a.open then
    if sec == a.open then
      a.open_blob = a.open_blob .. item
      a.open_src, a.open_ts = src, ts
      a.dirty = true
      return false
    elseif sec > a.open then
      close_open(a, idx, src)
    else
      late = true
    end
  elseif a.last_closed and sec <= a.last_closed then
    late = true
  end
  if late then
    close_bucket(a, idx, sec_s, '1', item, src, ts, src)
    return true
  end
  a.open, a.open_s, a.deadline = sec, sec_s, now + a.close_ms
  a.deadline_s = tostring(a.deadline)
  if math.floor(a.deadline) == a.deadline then a.deadline_s = string.format('%d', a.deadline) end
  a.open_blob = item
  a.open_src, a.open_ts = src, ts
  a.dirty = true
  return false
end

local function replay_closes(a, idx, src)
  local s = redis.call('ZSCORE', a.wkey .. ':cb', src)
  if not s then return end
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', a.wkey, s, tonumber(s) + 1)) do
    local seq, sec, late, osrc, ots, cause = string.match(m, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|')
    if cause == src then add_close(idx, seq, sec, late, osrc, ots) end
  end
end

for i = 0, n - 1 do
  local b = first_rec + i * 6
  local a = A[tonumber(ARGV[b])]
  local part = P[tonumber(ARGV[b + 1])]
  local off_s = ARGV[b + 2]
  local offset = tonumber(off_s)
  local key, item, ts = ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local idx = i + 1
  local field = 'hwm:' .. part
  local h = hwm[field]
  if offset <= h and applying[field] ~= offset then
    status[idx] = 'r'
    if a.kind == 'orders' then replay_closes(a, idx, part .. ':' .. off_s) end
  else
    applying[field] = offset
    hwm[field] = offset
    meta_out[field] = off_s
    init(a)
    local st = 'a'
    local nts = tonumber(ts)
    local k = a.kind
    if k == 'latest' or k == 'output' then
      if a.ts == nil or nts >= a.ts or redis.call('EXISTS', a.wkey) == 0 then
        if k == 'latest' then
          if a.ret ~= '' then redis.call('SET', a.wkey, item, 'PX', a.ret)
          else redis.call('SET', a.wkey, item) end
        else
          a.items[#a.items + 1] = item
          a.touched = true
        end
        a.ts, a.ts_s = nts, ts
      else
        st = 's'
      end
    elseif k == 'append' then
      a.items[#a.items + 1] = item
      bump_ts(a, ts, nts)
      a.touched = true
    elseif k == 'hourly' then
      -- key is 'hour|oldest hour kept when this hour is the newest'
      local hour, cut = string.match(key, '^(.-)|(.*)$')
      if a.hc and hour < a.hc then
        st = 'i'
      else
        if not a.hn or hour > a.hn then
          a.hn, a.hc = hour, cut
          a.hour_moved = true
          for _, old in ipairs(redis.call('HKEYS', a.tkey)) do
            if old < cut then redis.call('HDEL', a.wkey, old); redis.call('HDEL', a.tkey, old) end
          end
        end
        local old = tonumber(redis.call('HGET', a.tkey, hour))
        if old == nil or nts >= old then
          redis.call('HSET', a.wkey, hour, item)
          redis.call('HSET', a.tkey, hour, ts)
        else
          st = 's'
        end
        bump_ts(a, ts, nts)
        a.touched = true
      end
    elseif k == 'devices' then
      if a.cutoff and nts < a.cutoff then
        st = 's'  -- already older than the TTL: it would be removed by this very write
      else
        local won = redis.call('ZADD', a.tkey, 'GT', 'CH', ts, key) == 1
        if not won then won = tonumber(redis.call('ZSCORE', a.tkey, key)) == nts end  -- a tie: later wins
        if won then
          a.card = a.card + redis.call('HSET', a.wkey, key, item)
          if a.card > a.cap then
            local drop = redis.call('ZRANGE', a.tkey, 0, a.card - a.cap - 1)
            redis.call('HDEL', a.wkey, unpack(drop))
            redis.call('ZREMRANGEBYRANK', a.tkey, 0, a.card - a.cap - 1)
            a.card = a.cap
          end
        else
          st = 's'
        end
      end
      bump_ts(a, ts, nts)
      a.touched = true
    elseif k == 'global' then
      local old = tonumber(redis.call('HGET', a.tkey, key))
      if old == nil or nts >= old then
        redis.call('HSET', a.wkey, key, item)
        redis.call('HSET', a.tkey, key, ts)
        local nk = redis.call('HLEN', a.tkey)
        if nk > a.cap then
          local all = redis.call('HKEYS', a.tkey)
          table.sort(all)
          for j = 1, nk - a.cap do redis.call('HDEL', a.wkey, all[j]); redis.call('HDEL', a.tkey, all[j]) end
          if redis.call('HEXISTS', a.tkey, key) == 0 then st = 'i' end
        end
      else
        st = 's'
      end
      bump_ts(a, ts, nts)
      a.touched = true
    elseif k == 'orders' then
      if apply_order(a, idx, key, item, ts, part .. ':' .. off_s) then st = 'l' end
      bump_ts(a, ts, nts)
      a.touched = true
    else
      return redis.error_reply('unknown window kind ' .. k)
    end
    status[idx] = st
  end
end

-- write back per-alias state, evict, expire
for _, a in ipairs(A) do
  if a.loaded then
    local k = a.kind
    if a.ts_s then meta_out['ts:' .. a.alias] = a.ts_s end
    if k == 'output' and #a.items > 0 then
      redis.call('LPUSH', a.wkey, unpack(a.items))
      redis.call('LTRIM', a.wkey, 0, a.cap - 1)
    end
    if k == 'append' and #a.items > 0 then
      redis.call('RPUSH', a.wkey, unpack(a.items))
      redis.call('LTRIM', a.wkey, -a.cap, -1)
    end
    if k == 'hourly' and a.hour_moved then
      meta_out['hn:' .. a.alias] = a.hn
      meta_out['hc:' .. a.alias] = a.hc
    end
    if k == 'orders' and a.dirty then
      local f = {'seq', a.seq}
      if a.last_closed_s then f[#f + 1] = 'last_closed'; f[#f + 1] = a.last_closed_s end
      if a.open then
        for _, v in ipairs({'open', a.open_s, 'deadline', a.deadline_s, 'open_src', a.open_src, 'open_ts', a.open_ts,
                            'open_items', a.open_blob}) do
          f[#f + 1] = v
        end
      elseif a.had_open then
        redis.call('HDEL', a.st, 'open', 'deadline', 'open_src', 'open_ts', 'open_items')
      end
      redis.call('HSET', a.st, unpack(f))
      local ev = evict_seconds(a.wkey, a.seq, a.card, a.cap, a.cursors)
      if a.card > a.cap then redis.call('ZREMRANGEBYSCORE', a.cbkey, '-inf', a.seq - a.cap) end
      if ev > 0 then evicted[#evicted + 1] = a.idx; evicted[#evicted + 1] = ev end
    end
    if a.touched and a.ret ~= '' and (a.created or a.refresh) then
      redis.call('PEXPIRE', a.wkey, a.ret)
      if a.tkey then redis.call('PEXPIRE', a.tkey, a.ret) end
      if k == 'orders' then
        redis.call('PEXPIRE', a.st, a.ret)
        redis.call('PEXPIRE', a.cbkey, a.ret)
      end
      if a.refresh then meta_out['x:' .. a.alias] = ARGV[1] end
    end
  end
end
local mf = {}
for f, v in pairs(meta_out) do mf[#mf + 1] = f; mf[#mf + 1] = v end
if #mf > 0 then redis.call('HSET', meta, unpack(mf)) end
if meta_ret ~= '' then redis.call('PEXPIRE', meta, meta_ret) end
return {table.concat(status), closes, evicted}
