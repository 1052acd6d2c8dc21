-- Apply one poll's records of ONE station (or one global alias) atomically.
-- KEYS[1] meta hash: hwm:<topic>:<partition> offset high-water marks, ts:<alias> newest record
--         ms, hn:/hc:<alias> newest stored hour and the oldest hour kept.
-- ARGV: now_ms, meta_retention_ms ('' = never), n_aliases, then per alias 7 fields
--   (alias kind wkey retention_ms cap x1 x2), n_partitions, then per partition 'topic:partition',
--   then per record, in offset order, 6 fields: alias_index partition_index offset key item ts.
-- x1/x2: hourly x1 = the oldest hour kept for this call's newest hour per record is sent as key
--   suffix (see below); devices x1 = ttl ms; orders x1 = close ms, x2 = modules csv.
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

local function add_close(idx, seq, sec, late, src, ts)
  local c = closes
  c[#c + 1] = idx; c[#c + 1] = seq; c[#c + 1] = sec; c[#c + 1] = late; c[#c + 1] = src; c[#c + 1] = ts
end

-- per-alias state, loaded on first use and written back once at the end
local function init(a)
  if a.loaded then return a end
  a.loaded = true
  local k = a.kind
  local raw_ts = redis.call('HGET', meta, 'ts:' .. a.alias)
  a.ts = tonumber(raw_ts)
  if k == 'hourly' then
    local cur = redis.call('HMGET', meta, 'hn:' .. a.alias, 'hc:' .. a.alias)
    if redis.call('EXISTS', a.wkey) == 1 then a.hn, a.hc = cur[1], cur[2] end
    a.tkey = a.wkey .. ':ts'
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
  elseif k == 'global' then
    a.tkey = a.wkey .. ':ts'
  elseif k == 'append' then
    a.items = {}
  elseif k == 'orders' then
    a.st, a.okey, a.cbkey = a.wkey .. ':st', a.wkey .. ':open', a.wkey .. ':cb'
    local f = redis.call('HMGET', a.st, 'open', 'deadline', 'last_closed', 'seq', 'open_src', 'open_ts')
    a.open, a.deadline, a.last_closed = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
    a.open_s, a.deadline_s, a.last_closed_s = f[1], f[2], f[3]
    a.seq = tonumber(f[4]) or 0
    a.open_src, a.open_ts = f[5], f[6]
    a.card = redis.call('ZCARD', a.wkey)
    a.cb_seen = {}
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
  local items = a.open_items
  if items == nil then items = redis.call('LRANGE', a.okey, 0, -1) end
  close_bucket(a, idx, a.open_s, '0', table.concat(items), a.open_src, a.open_ts, cause)
  a.open, a.open_s, a.open_items = nil, nil, nil
  a.list_reset = true
end

local function apply_order(a, idx, sec_s, item, ts, src)
  local sec = tonumber(sec_s)
  if a.open and a.deadline <= now then close_open(a, idx, src) end
  local late = false
  if a.open then
    if sec == a.open then
      if a.open_items then a.open_items[#a.open_items + 1] = item
      else redis.call('RPUSH', a.okey, item) end
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
  a.open_items = {item}
  a.open_src, a.open_ts = src, ts
  a.list_reset = true
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
  if h == nil then
    h = tonumber(redis.call('HGET', meta, field)) or -1
    hwm[field] = h
  end
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
          redis.call('SET', a.wkey, item)
        else
          redis.call('LPUSH', a.wkey, item)
          a.trim = true
        end
        a.ts, a.ts_s = nts, ts
        a.touched = true
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
        local old = tonumber(redis.call('ZSCORE', a.tkey, key))
        if old == nil or nts >= old then
          redis.call('HSET', a.wkey, key, item)
          a.card = a.card + redis.call('ZADD', a.tkey, ts, key)
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
    if k == 'output' and a.trim then redis.call('LTRIM', a.wkey, 0, a.cap - 1) end
    if k == 'append' and #a.items > 0 then
      redis.call('RPUSH', a.wkey, unpack(a.items))
      redis.call('LTRIM', a.wkey, -a.cap, -1)
    end
    if k == 'hourly' and a.hour_moved then
      meta_out['hn:' .. a.alias] = a.hn
      meta_out['hc:' .. a.alias] = a.hc
    end
    if k == 'orders' and a.dirty then
      if a.list_reset then
        redis.call('DEL', a.okey)
        if a.open_items and #a.open_items > 0 then redis.call('RPUSH', a.okey, unpack(a.open_items)) end
      end
      local f = {'seq', a.seq}
      if a.last_closed_s then f[#f + 1] = 'last_closed'; f[#f + 1] = a.last_closed_s end
      if a.open then
        for _, v in ipairs({'open', a.open_s, 'deadline', a.deadline_s, 'open_src', a.open_src, 'open_ts', a.open_ts}) do
          f[#f + 1] = v
        end
      else
        redis.call('HDEL', a.st, 'open', 'deadline', 'open_src', 'open_ts')
      end
      redis.call('HSET', a.st, unpack(f))
      local ev = evict_seconds(a.wkey, a.st, a.card, a.cap, csv(a.x2))
      if ev > 0 then evicted[#evicted + 1] = a.idx; evicted[#evicted + 1] = ev end
    end
    if a.touched and a.ret ~= '' then
      redis.call('PEXPIRE', a.wkey, a.ret)
      if a.tkey then redis.call('PEXPIRE', a.tkey, a.ret) end
      if k == 'orders' then
        redis.call('PEXPIRE', a.st, a.ret)
        redis.call('PEXPIRE', a.okey, a.ret)
        redis.call('PEXPIRE', a.cbkey, a.ret)
      end
    end
  end
end
local mf = {}
for f, v in pairs(meta_out) do mf[#mf + 1] = f; mf[#mf + 1] = v end
if #mf > 0 then redis.call('HSET', meta, unpack(mf)) end
if meta_ret ~= '' then redis.call('PEXPIRE', meta, meta_ret) end
return {table.concat(status), closes, evicted}
