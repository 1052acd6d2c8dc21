-- Apply one poll's records of ONE station (or one global alias) atomically.
-- KEYS[1]  meta hash (offset high-water marks, newest ts per alias, hourly cursor)
-- ARGV[1]  now_ms   ARGV[2] meta retention ms ('' = never)
-- then 13 fields per record, in offset order:
--   hwm_field offset alias kind wkey key item ts retention_ms cap extra1 extra2 src
-- Returns {status, closes, evicted}: status has one char per record (a applied, s superseded
-- by newer data, r replay skipped, i outside the window (hourly hour, global key), l late order); closes is
-- flat {record_index, seq, second, late, src, ts} per closed order second; evicted is flat
-- {record_index, n} of evicted undelivered order seconds.
local meta = KEYS[1]
local now = tonumber(ARGV[1])
local meta_ret = ARGV[2]
local NF = 13
local n = (#ARGV - 2) / NF
local status, closes, evicted = {}, {}, {}
local hwm, applying, hwm_new = {}, {}, {}
local expire = {}

local function touch(key, ret) if ret ~= '' then expire[key] = ret end end

local function bump_ts(alias, ts)
  local f = 'ts:' .. alias
  local old = tonumber(redis.call('HGET', meta, f))
  if old == nil or tonumber(ts) > old then redis.call('HSET', meta, f, ts) end
end

local function add_close(idx, c)
  for _, v in ipairs({idx, c[1], c[2], c[3], c[4], c[5]}) do closes[#closes + 1] = v end
end

local function replay_closes(idx, wkey, src)
  local st = wkey .. ':st'
  local seqs = csv(redis.call('HGET', st, 'cb:' .. src))
  for _, seq in ipairs(seqs) do
    local m = redis.call('ZRANGEBYSCORE', wkey, seq, seq)[1]
    if m then
      local s, sec, late, osrc, ots = string.match(m, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|')
      add_close(idx, {s, sec, late, osrc, ots})
    end
  end
end

local function apply_orders(idx, wkey, sec_s, item, ts, cap, close_ms, mods, src)
  local st, okey = wkey .. ':st', wkey .. ':open'
  local sec = tonumber(sec_s)
  local late = false
  local state = redis.call('HMGET', st, 'open', 'deadline', 'last_closed')
  local open = tonumber(state[1])
  if open and tonumber(state[2]) <= now then
    add_close(idx, close_open(wkey, st, okey, src))
    open = nil
  end
  if open then
    if sec == open then
      redis.call('RPUSH', okey, item)
      redis.call('HSET', st, 'open_src', src, 'open_ts', ts)
    elseif sec > open then
      add_close(idx, close_open(wkey, st, okey, src))
      open = nil
    else
      late = true
    end
  else
    local lc = tonumber(redis.call('HGET', st, 'last_closed'))
    if lc and sec <= lc then late = true end
  end
  if late then
    local seq = close_second(wkey, st, sec_s, '1', item, src, ts, src)
    add_close(idx, {seq, sec_s, '1', src, ts})
  elseif open == nil then
    redis.call('DEL', okey)
    redis.call('RPUSH', okey, item)
    redis.call('HSET', st, 'open', sec_s, 'deadline', now + close_ms, 'open_src', src, 'open_ts', ts)
  end
  local ev = evict_seconds(wkey, st, cap, mods)
  if ev > 0 then evicted[#evicted + 1] = idx; evicted[#evicted + 1] = ev end
  return late
end

for i = 0, n - 1 do
  local b = 2 + i * NF
  local field, offset, alias, kind = ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3], ARGV[b + 4]
  local wkey, key, item, ts = ARGV[b + 5], ARGV[b + 6], ARGV[b + 7], ARGV[b + 8]
  local ret, cap, x1, x2, src = ARGV[b + 9], tonumber(ARGV[b + 10]), ARGV[b + 11], ARGV[b + 12], ARGV[b + 13]
  local idx = i + 1
  local h = hwm[field]
  if h == nil then
    h = tonumber(redis.call('HGET', meta, field) or '-1')
    hwm[field] = h
  end
  if offset <= h and applying[field] ~= offset then
    status[idx] = 'r'
    if kind == 'orders' then replay_closes(idx, wkey, src) end
  else
    applying[field] = offset
    hwm[field] = offset
    hwm_new[field] = ARGV[b + 2]
    local st = 'a'
    local nts = tonumber(ts)
    if kind == 'latest' or kind == 'output' then
      local f = 'ts:' .. alias
      local old = tonumber(redis.call('HGET', meta, f))
      if old == nil or nts >= old or redis.call('EXISTS', wkey) == 0 then
        if kind == 'latest' then
          redis.call('SET', wkey, item)
        else
          redis.call('LPUSH', wkey, item)
          redis.call('LTRIM', wkey, 0, cap - 1)
        end
        redis.call('HSET', meta, f, ts)
        touch(wkey, ret)
      else
        st = 's'
      end
    elseif kind == 'append' then
      redis.call('RPUSH', wkey, item)
      redis.call('LTRIM', wkey, -cap, -1)
      bump_ts(alias, ts)
      touch(wkey, ret)
    elseif kind == 'hourly' then
      local tkey = wkey .. ':ts'
      local hn, hc = 'hn:' .. alias, 'hc:' .. alias
      local cur = redis.call('HMGET', meta, hn, hc)
      if redis.call('EXISTS', wkey) == 0 then cur = {false, false} end
      if cur[2] and key < cur[2] then
        st = 'i'
      else
        if not cur[1] or key > cur[1] then
          redis.call('HSET', meta, hn, key, hc, x1)
          for _, hour in ipairs(redis.call('HKEYS', tkey)) do
            if hour < x1 then redis.call('HDEL', wkey, hour); redis.call('HDEL', tkey, hour) end
          end
        end
        local old = tonumber(redis.call('HGET', tkey, key))
        if old == nil or nts >= old then
          redis.call('HSET', wkey, key, item)
          redis.call('HSET', tkey, key, ts)
        else
          st = 's'
        end
        bump_ts(alias, ts)
        touch(wkey, ret); touch(tkey, ret)
      end
    elseif kind == 'devices' then
      local tkey = wkey .. ':ts'
      local old = tonumber(redis.call('ZSCORE', tkey, key))
      if old == nil or nts >= old then
        redis.call('HSET', wkey, key, item)
        redis.call('ZADD', tkey, ts, key)
      else
        st = 's'
      end
      if x1 ~= '' then
        local cutoff = now - tonumber(x1)
        local old_devs = redis.call('ZRANGEBYSCORE', tkey, '-inf', '(' .. cutoff)
        if #old_devs > 0 then
          redis.call('HDEL', wkey, unpack(old_devs))
          redis.call('ZREMRANGEBYSCORE', tkey, '-inf', '(' .. cutoff)
        end
      end
      local nd = redis.call('ZCARD', tkey)
      if nd > cap then
        local drop = redis.call('ZRANGE', tkey, 0, nd - cap - 1)
        redis.call('HDEL', wkey, unpack(drop))
        redis.call('ZREMRANGEBYRANK', tkey, 0, nd - cap - 1)
      end
      bump_ts(alias, ts)
      touch(wkey, ret); touch(tkey, ret)
    elseif kind == 'global' then
      local tkey = wkey .. ':ts'
      local old = tonumber(redis.call('HGET', tkey, key))
      if old == nil or nts >= old then
        redis.call('HSET', wkey, key, item)
        redis.call('HSET', tkey, key, ts)
      else
        st = 's'
      end
      local nk = redis.call('HLEN', tkey)
      if nk > cap then
        local all = redis.call('HKEYS', tkey)
        table.sort(all)
        for j = 1, nk - cap do redis.call('HDEL', wkey, all[j]); redis.call('HDEL', tkey, all[j]) end
        if redis.call('HEXISTS', tkey, key) == 0 then st = 'i' end
      end
      bump_ts(alias, ts)
      touch(wkey, ret); touch(tkey, ret)
    elseif kind == 'orders' then
      if apply_orders(idx, wkey, key, item, ts, cap, tonumber(x1), csv(x2), src) then st = 'l' end
      bump_ts(alias, ts)
      touch(wkey, ret); touch(wkey .. ':st', ret); touch(wkey .. ':open', ret)
    else
      return redis.error_reply('unknown window kind ' .. kind)
    end
    status[idx] = st
  end
end

for f, v in pairs(hwm_new) do redis.call('HSET', meta, f, v) end
for k, ret in pairs(expire) do
  if redis.call('EXISTS', k) == 1 then redis.call('PEXPIRE', k, ret) end
end
if meta_ret ~= '' then redis.call('PEXPIRE', meta, meta_ret) end
return {table.concat(status), closes, evicted}
