-- Apply one poll's records of one or more units atomically; a unit is ONE station (or one
-- global alias). On a single Redis one call carries many stations; under Redis Cluster the
-- caller sends one unit per call, so a call never touches another station's slot.
-- KEYS, per unit: its meta hash (hwm:<topic>:<partition> offset high-water marks, ts:<alias>
--          newest record ms, hn:/hc:<alias> newest stored hour and the oldest hour kept,
--          x:<alias> when the alias's keys last had their TTL set (refreshed every
--          retention/64, or on creation), xm when the meta hash itself last had it), then
--          for each alias in the order its first record comes, its nkeys keys: the window,
--          then its ':ts' index (hourly, devices, global) or its state and closers (orders).
--          Every key the script touches is declared; it builds no key name.
-- ARGV: now_ms, meta_retention_ms ('' = never), n_aliases, then per alias 8 fields
--   (alias_index alias kind nkeys retention_ms cap x1 x2), n_streams, then per stream 3
--   fields (stream_index alias_index 'topic:partition') -- only those the call's records use;
--   indexes are the caller's, shared by every call of a poll --, then per unit (one per
--   KEYS entry, same order):
--   n_records, then per record, in offset order, 5 fields: stream_index offset ts key
--   item (separate arguments: string.match over a packed header cost ~10% of the script).
-- x1/x2: devices x1 = ttl ms; orders
--   x1 = close ms, x2 = modules csv. Hourly keys are 'hour|oldest hour kept when this hour
--   is the newest'.
-- Returns {status, closes, evicted}: status has one char per record of the call, units in
-- order (a applied, s superseded by newer data, r replay skipped, i outside the window,
-- l late order; devices: o applied and z superseded, both older than the TTL on arrival); closes is flat {record_index, seq, second, late, src, ts} per closed order
-- second (record_index counts from 1 over the whole call); evicted is flat {alias_index, n}
-- of closed seconds evicted before every module received them.
local call, tonumber = redis.call, tonumber
local now = tonumber(ARGV[1])
local meta_ret = ARGV[2]
local pos = 3
-- Written into a meta hash when it gains a partition (and at its TTL refresh). Besides telling
-- an operator what the fields mean, it is longer than hash-max-listpack-value (64): Redis then
-- keeps the hash as a real hash table instead of a listpack, where each of the ~10 fields that
-- every call reads was a linear scan over ~40 fields (about 5% of the script's instructions).
local ABOUT = 'stationflow window meta: hwm:<topic>:<partition> last applied offset, ts:<alias> newest record ms, x:<alias>/xm last TTL refresh'
-- TTL refresh stamps are now_ms strings. A stamp is due when stamp <= now - every, compared
-- as decimal strings (length first) against a threshold computed once: tonumber (strtod) on
-- every stamp of every station was a visible share of the script.
local function threshold(x)
  if x < 0 then return nil end  -- no stamp is that old
  return string.format('%d', math.floor(x))
end
-- x >= y for timestamps and offsets: decimal strings of non-negative integers without leading
-- zeros (the caller guarantees it), so length decides first
local function ge(x, y)
  local lx, ly = #x, #y
  if lx ~= ly then return lx > ly end
  return x >= y
end
local function due(stamp, thr)
  if not stamp then return true end
  return thr ~= nil and ge(thr, stamp)
end
local D = {}
local na = tonumber(ARGV[pos]); pos = pos + 1
for _ = 1, na do
  local i = tonumber(ARGV[pos])
  pos = pos + 1
  local alias, kind = ARGV[pos], ARGV[pos + 1]
  local d = {alias = alias, kind = kind, nk = tonumber(ARGV[pos + 2]), ret = ARGV[pos + 3],
             cap = tonumber(ARGV[pos + 4]), x1 = ARGV[pos + 5], x2 = ARGV[pos + 6], idx = i,
             ts_f = 'ts:' .. alias, x_f = 'x:' .. alias, wkey = '', loaded = false, ts = false, ts_s = false,
             refresh = false, tkey = false, created = false, touched = false, items = false, hn = false,
             hc = false, hour_moved = false, dirty = false}
  if d.ret ~= '' then
    d.every = tonumber(d.ret) / 64
    d.thr = threshold(now - d.every)
  end
  if kind == 'hourly' then d.hn_f, d.hc_f = 'hn:' .. alias, 'hc:' .. alias end
  if kind == 'devices' and d.x1 ~= '' then
    d.ttl = tonumber(d.x1)
    d.cutoff = now - d.ttl
    d.cutoff_s = '(' .. string.format('%d', d.cutoff)
    d.cutoff_t = threshold(d.cutoff)  -- a record older than this is stale on arrival
  end
  if kind == 'orders' then
    d.mods = csv(d.x2)
    d.names = {'open', 'deadline', 'last_closed', 'seq', 'open_src', 'open_ts', 'open_items'}
    for _, m in ipairs(d.mods) do d.names[#d.names + 1] = 'cur:' .. m end
    d.close_ms = tonumber(d.x1)
  end
  D[i] = d
  pos = pos + 7
end
-- the meta hash lives meta_ret + 1/64 after its last TTL refresh (xm), which happens at most
-- every meta_ret/64: it outlives every window key written since (those live retention <= meta_ret)
local meta_ttl, meta_every, meta_thr
if meta_ret ~= '' then
  local mr = tonumber(meta_ret)
  meta_every = mr / 64
  meta_ttl = string.format('%d', mr + math.floor(mr / 64))
  meta_thr = threshold(now - meta_every)
end
local SK = {}
local ns = tonumber(ARGV[pos]); pos = pos + 1
for _ = 1, ns do
  local part = ARGV[pos + 2]
  -- records name their stream by the same text as ARGV[pos]
  SK[ARGV[pos]] = {ai = tonumber(ARGV[pos + 1]), part = part, field = 'hwm:' .. part, pre = part .. ':'}
  pos = pos + 3
end

local status, closes, evicted = {}, {}, {}
-- per unit (reset for each one)
local M, hwm, applying, meta_out

local function add_close(idx, seq, sec, late, src, ts)
  local c = closes
  c[#c + 1] = idx; c[#c + 1] = seq; c[#c + 1] = sec; c[#c + 1] = late; c[#c + 1] = src; c[#c + 1] = ts
end

-- per-alias state, loaded on first use and written back once at the end
local function init(a)
  if a.loaded then return a end
  a.loaded = true
  local k = a.kind
  a.ts = M[a.ts_f] or nil
  a.refresh = a.every ~= nil and due(M[a.x_f], a.thr)
  if k == 'hourly' then
    if call('EXISTS', a.wkey) == 1 then a.hn, a.hc = M[a.hn_f], M[a.hc_f]
    else a.created = true end
  elseif k == 'devices' then
    -- the cap is checked and the TTLs (re)set only when a device is added (see below)
  elseif k == 'global' then
    a.created = true
  elseif k == 'append' or k == 'output' then
    a.items = {}
    a.created = true
  elseif k == 'orders' then
    local f = call('HMGET', a.st, unpack(a.names))
    a.open, a.deadline, a.last_closed = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
    a.open_s, a.deadline_s, a.last_closed_s = f[1], f[2], f[3]
    a.had_open = f[1] and true or false
    a.seq = tonumber(f[4]) or 0
    a.open_src, a.open_ts, a.open_blob = f[5], f[6], f[7] or ''
    a.stf = f  -- the cursors (f[8..]) are parsed only when seconds are evicted
    a.cb_seen = {}
    a.card = call('ZCARD', a.wkey)
    if a.card == 0 or a.seq == 0 then a.created = true end
  end
  return a
end

-- a.ts: the alias's newest record timestamp (string); a.ts_s: set when this call moved it
local function bump_ts(a, ts)
  if a.ts == nil or not ge(a.ts, ts) then a.ts = ts; a.ts_s = ts end
end

local function close_bucket(a, idx, sec, late, blob, src, ts, cause)
  a.seq = a.seq + 1
  call('ZADD', a.wkey, a.seq, closed_member(a.seq, sec, late, src, ts, cause, blob))
  if cause ~= '' and not a.cb_seen[cause] then
    a.cb_seen[cause] = true
    call('ZADD', a.cbkey, a.seq, cause)
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
  local s = call('ZSCORE', a.cbkey, src)
  if not s then return end
  for _, m in ipairs(call('ZRANGEBYSCORE', a.wkey, s, tonumber(s) + 1)) do
    local seq, sec, late, osrc, ots, cause = string.match(m, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|')
    if cause == src then add_close(idx, seq, sec, late, osrc, ots) end
  end
end

local ridx = 0
-- scratch tables reused by every unit (cleared or overwritten per unit): allocating and
-- growing a dozen small tables per station was a large share of the script's cost
local A, fseen = {}, {}
M, hwm, applying, meta_out = {}, {}, {}, {}
local alist, mnames = {}, {}
local kp, nkeys = 1, #KEYS
while kp <= nkeys do
  local meta = KEYS[kp]
  kp = kp + 1
  local first_rec = pos + 1
  local n = tonumber(ARGV[pos])
  pos = first_rec + n * 5

  -- the aliases and partitions of this unit, and every meta field it may need, in one read
  local nm, na_u = 0, 0
  for b = first_rec, pos - 1, 5 do
    local s = SK[ARGV[b]]
    local f = s.field
    if not fseen[f] then fseen[f] = true; nm = nm + 1; mnames[nm] = f end
    if not A[s.ai] then
      -- an alias's state table is reused by every unit of the call (reset here): building a
      -- fresh 30-field table per station and alias cost more than the writes themselves
      local a = D[s.ai]
      a.loaded, a.ts, a.ts_s, a.refresh, a.created, a.touched = false, nil, nil, false, false, false
      a.wkey = KEYS[kp]
      if a.nk == 2 then a.tkey = KEYS[kp + 1]
      elseif a.nk == 3 then a.st, a.cbkey = KEYS[kp + 1], KEYS[kp + 2] end
      kp = kp + a.nk
      a.items, a.hn, a.hc, a.hour_moved, a.dirty = nil, nil, nil, false, false
      A[s.ai] = a
      na_u = na_u + 1
      alist[na_u] = a
      mnames[nm + 1] = a.ts_f
      mnames[nm + 2] = a.x_f
      nm = nm + 2
      if a.hn_f then mnames[nm + 1] = a.hn_f; mnames[nm + 2] = a.hc_f; nm = nm + 2 end
    end
  end
  nm = nm + 1
  mnames[nm] = 'xm'
  local mvals = call('HMGET', meta, unpack(mnames, 1, nm))
  for i = 1, nm do M[mnames[i]] = mvals[i] end
  local fresh = false
  for f in pairs(fseen) do hwm[f] = M[f]; applying[f] = nil; if not M[f] then fresh = true end end

  for b = first_rec, pos - 1, 5 do
    local s = SK[ARGV[b]]
    local a = A[s.ai]
    local off_s, ts, key, item = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
    ridx = ridx + 1
    local idx = ridx
    local field = s.field
    local h = hwm[field]
    if h and ge(h, off_s) and applying[field] ~= off_s then
      status[idx] = 'r'
      if a.kind == 'orders' then replay_closes(a, idx, s.pre .. off_s) end
    else
      applying[field] = off_s
      hwm[field] = off_s
      meta_out[field] = off_s
      init(a)
      local st = 'a'
      local k = a.kind
      if k == 'latest' or k == 'output' then
        if a.ts == nil or ge(ts, a.ts) or call('EXISTS', a.wkey) == 0 then
          if k == 'latest' then
            if a.ret ~= '' then call('SET', a.wkey, item, 'PX', a.ret)
            else call('SET', a.wkey, item) end
          else
            a.items[#a.items + 1] = item
            a.touched = true
          end
          a.ts, a.ts_s = ts, ts
        else
          st = 's'
        end
      elseif k == 'append' then
        a.items[#a.items + 1] = item
        bump_ts(a, ts)
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
            for _, old in ipairs(call('HKEYS', a.tkey)) do
              if old < cut then call('HDEL', a.wkey, old); call('HDEL', a.tkey, old) end
            end
          end
          local old = call('HGET', a.tkey, hour)
          if not old or ge(ts, old) then
            call('HSET', a.wkey, hour, item)
            call('HSET', a.tkey, hour, ts)
          else
            st = 's'
          end
          bump_ts(a, ts)
          a.touched = true
        end
      elseif k == 'devices' then
        -- older than the TTL already: still the newest known state of its device, so stored
        -- (hidden from module inputs while stale) and counted apart ('o' stored, 'z' superseded)
        local stale = a.cutoff_t ~= nil and not ge(ts, a.cutoff_t)
        local won = call('ZADD', a.tkey, 'GT', 'CH', ts, key) == 1
        if not won then won = tonumber(call('ZSCORE', a.tkey, key)) == tonumber(ts) end  -- a tie: later wins
        if won then
          if call('HSET', a.wkey, key, item) == 1 then
            -- a new device (or a new key): cap, and give both keys a full TTL at write-back
            a.created = true
            local card = call('ZCARD', a.tkey)
            if card > a.cap then
              local drop = call('ZRANGE', a.tkey, 0, card - a.cap - 1)
              call('HDEL', a.wkey, unpack(drop))
              call('ZREMRANGEBYRANK', a.tkey, 0, card - a.cap - 1)
            end
          end
          if stale then st = 'o' end
        else
          st = stale and 'z' or 's'
        end
        bump_ts(a, ts)
        a.touched = true
      elseif k == 'global' then
        local old = call('HGET', a.tkey, key)
        if not old or ge(ts, old) then
          call('HSET', a.wkey, key, item)
          call('HSET', a.tkey, key, ts)
          local nk = call('HLEN', a.tkey)
          if nk > a.cap then
            local all = call('HKEYS', a.tkey)
            table.sort(all)
            for j = 1, nk - a.cap do call('HDEL', a.wkey, all[j]); call('HDEL', a.tkey, all[j]) end
            if call('HEXISTS', a.tkey, key) == 0 then st = 'i' end
          end
        else
          st = 's'
        end
        bump_ts(a, ts)
        a.touched = true
      elseif k == 'orders' then
        if apply_order(a, idx, key, item, ts, s.pre .. off_s) then st = 'l' end
        bump_ts(a, ts)
        a.touched = true
      else
        return redis.error_reply('unknown window kind ' .. k)
      end
      status[idx] = st
    end
  end

  -- write back per-alias state, evict, expire
  for ai = 1, na_u do
    local a = alist[ai]
    A[a.idx] = nil
    if a.loaded then
      local k = a.kind
      if a.ts_s then meta_out[a.ts_f] = a.ts_s end
      if k == 'output' and #a.items > 0 then
        call('LPUSH', a.wkey, unpack(a.items))
        call('LTRIM', a.wkey, 0, a.cap - 1)
      end
      if k == 'append' and #a.items > 0 then
        call('RPUSH', a.wkey, unpack(a.items))
        call('LTRIM', a.wkey, -a.cap, -1)
      end
      if k == 'devices' and a.cutoff then
        -- drop the devices whose record is older than the TTL before the alias's newest record
        -- (capped at now): silent for longer than the TTL while the station's data went on.
        -- During a catch-up (every record minutes old) the newest record, not the clock,
        -- decides, so stale records stay (hidden while stale), and the result does not depend
        -- on the order in which partitions deliver.
        -- (the usual case, nothing older than now - ttl, costs one ZRANGEBYSCORE and no number
        -- formatting: the newest record's horizon is only computed when that finds something)
        local cut_s = a.cutoff_s
        local old = call('ZRANGEBYSCORE', a.tkey, '-inf', cut_s)
        if #old > 0 and a.ts and not ge(a.ts, ARGV[1]) then
          cut_s = '(' .. string.format('%d', tonumber(a.ts) - a.ttl)
          old = call('ZRANGEBYSCORE', a.tkey, '-inf', cut_s)
        end
        if #old > 0 then
          call('HDEL', a.wkey, unpack(old))
          call('ZREMRANGEBYSCORE', a.tkey, '-inf', cut_s)
        end
      end
      if k == 'hourly' and a.hour_moved then
        meta_out[a.hn_f] = a.hn
        meta_out[a.hc_f] = a.hc
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
          call('HDEL', a.st, 'open', 'deadline', 'open_src', 'open_ts', 'open_items')
        end
        call('HSET', a.st, unpack(f))
        local ev = 0
        if a.card > a.cap then
          local cursors = {}
          for i = 1, #a.mods do cursors[i] = tonumber(a.stf[7 + i]) or 0 end
          ev = evict_seconds(a.wkey, a.seq, a.card, a.cap, cursors)
        end
        if a.card > a.cap then call('ZREMRANGEBYSCORE', a.cbkey, '-inf', a.seq - a.cap) end
        if ev > 0 then evicted[#evicted + 1] = a.idx; evicted[#evicted + 1] = ev end
      end
      if a.touched and a.ret ~= '' and (a.created or a.refresh) then
        call('PEXPIRE', a.wkey, a.ret)
        if a.tkey then call('PEXPIRE', a.tkey, a.ret) end
        if k == 'orders' then
          call('PEXPIRE', a.st, a.ret)
          call('PEXPIRE', a.cbkey, a.ret)
        end
        if a.refresh then meta_out[a.x_f] = ARGV[1] end
      end
    end
  end
  local mf = {}
  for f, v in pairs(meta_out) do mf[#mf + 1] = f; mf[#mf + 1] = v; meta_out[f] = nil end
  for f in pairs(fseen) do fseen[f] = nil end
  local refresh_meta = meta_ttl and due(M.xm, meta_thr)
  if refresh_meta then mf[#mf + 1] = 'xm'; mf[#mf + 1] = ARGV[1] end
  if fresh or refresh_meta then mf[#mf + 1] = 'about'; mf[#mf + 1] = ABOUT end
  if #mf > 0 then call('HSET', meta, unpack(mf)) end
  if refresh_meta then call('PEXPIRE', meta, meta_ttl) end
end
return {table.concat(status), closes, evicted}
