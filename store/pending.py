"""Coalescing markers: which runs of a station wait in its queued job, and which a job has taken.

`sf:{S}:pending` (hash) — module -> batch id of the run waiting for the station's job, plus
`_job` = the id of the RQ job that will take them. At most one pending run per (module,
station) (spec §6.5): a trigger that finds its module pending is absorbed. A trigger that
finds no `_job` starts a new job; every later trigger joins that job until it starts.

`sf:{S}:running` (hash) — module -> space-separated batch ids the current job took, plus
`_started` (ms) and `_job`. A job that dies leaves it behind: the next attempt of the job
(RQ retry) runs those modules again, and the sweeper reports them `lost` once they are older
than the job timeout. `sf:running` (zset) indexes stations with a running marker by start.

Both scripts touch only keys tagged `{S}`, so they are Redis-Cluster safe; the global
`sf:running` index is written in the same pipeline, outside the script.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from store.keys import Keys

#: pending markers of a station whose job vanished are not kept for ever
PENDING_EXPIRE_MS = 7 * 86_400_000

_MARK = """
-- KEYS[1] pending hash; ARGV: proposed job id, expire_ms, then module, batch_id pairs
-- returns {job_id, new (1 = this call claimed the job slot), flag per run}
-- flag: 1 = now pending, 2 = already pending with the same batch (a replay), 0 = absorbed
local pk = KEYS[1]
local job = redis.call('HGET', pk, '_job')
local new = 0
if not job then
  job = ARGV[1]
  new = 1
  redis.call('HSET', pk, '_job', job)
end
local out = {job, new}
for i = 3, #ARGV, 2 do
  local cur = redis.call('HGET', pk, ARGV[i])
  if not cur then
    redis.call('HSET', pk, ARGV[i], ARGV[i + 1])
    out[#out + 1] = 1
  elseif cur == ARGV[i + 1] then
    out[#out + 1] = 2
  else
    out[#out + 1] = 0
  end
end
redis.call('PEXPIRE', pk, ARGV[2])
return out
"""

_TAKE = """
-- KEYS[1] pending, KEYS[2] running; ARGV: now_ms, job id
-- Moves every pending run to running (merged with runs a failed attempt left there) and
-- returns the merged module -> batch ids list.
local runs = {}
local order = {}
local function add(m, batches)
  if string.sub(m, 1, 1) == '_' then return end
  if runs[m] == nil then
    runs[m] = batches
    order[#order + 1] = m
  else
    for b in string.gmatch(batches, '%S+') do
      if not string.find(' ' .. runs[m] .. ' ', ' ' .. b .. ' ', 1, true) then
        runs[m] = runs[m] .. ' ' .. b
      end
    end
  end
end
local r = redis.call('HGETALL', KEYS[2])
for i = 1, #r, 2 do add(r[i], r[i + 1]) end
local p = redis.call('HGETALL', KEYS[1])
for i = 1, #p, 2 do add(p[i], p[i + 1]) end
redis.call('DEL', KEYS[1])
local out = {}
if #order == 0 then
  redis.call('DEL', KEYS[2])
  return out
end
local args = {'_started', ARGV[1], '_job', ARGV[2]}
for _, m in ipairs(order) do
  args[#args + 1] = m
  args[#args + 1] = runs[m]
  out[#out + 1] = m
  out[#out + 1] = runs[m]
end
redis.call('HSET', KEYS[2], unpack(args))
return out
"""

_RECLAIM = """
-- KEYS[1] running; ARGV: cutoff_ms. Takes the runs of a job that started before the cutoff
-- (it died or hangs); returns {} when the marker is newer (a live job) or gone.
local started = redis.call('HGET', KEYS[1], '_started')
if not started then return {} end
if tonumber(started) > tonumber(ARGV[1]) then return {'live'} end
local r = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
local out = {'lost'}
for i = 1, #r, 2 do
  if string.sub(r[i], 1, 1) ~= '_' then
    out[#out + 1] = r[i]
    out[#out + 1] = r[i + 1]
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class Marked:
    """The outcome of marking one station's runs pending."""

    station: str
    job_id: str  # the job that will take the runs (new or already queued)
    new_job: bool  # this call opened the job slot: a job must be enqueued
    flags: tuple[int, ...]  # per run: 1 pending now, 2 replay of a pending run, 0 absorbed


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


class PendingRuns:
    def __init__(self, r: redis.Redis, prefix: str = "sf") -> None:
        self.r = r
        self.keys = Keys(prefix)
        self.running_index = f"{prefix}:running"
        self._mark = r.register_script(_MARK)
        self._take = r.register_script(_TAKE)
        self._reclaim = r.register_script(_RECLAIM)

    def running_key(self, station: str) -> str:
        return f"{self.keys.station_base(station)}running"

    def mark(self, runs: Mapping[str, Sequence[tuple[str, str]]], job_ids: Mapping[str, str]) -> list[Marked]:
        """Mark runs pending, one script per station, one round trip.

        `runs` maps station -> [(module, batch_id)] (one entry per module); `job_ids` the job id
        proposed for each station (used when the station has no job waiting)."""
        stations = list(runs)
        if not stations:
            return []
        pipe = self.r.pipeline(transaction=False)
        for s in stations:
            args: list[Any] = [job_ids[s], PENDING_EXPIRE_MS]
            for module, batch in runs[s]:
                args += [module, batch]
            self._mark(keys=[self.keys.pending(s)], args=args, client=pipe)
        out = []
        for s, reply in zip(stations, pipe.execute(), strict=True):
            out.append(Marked(s, _text(reply[0]), int(reply[1]) == 1, tuple(int(x) for x in reply[2:])))
        return out

    def take(self, station: str, job_id: str, now_ms: int) -> dict[str, list[str]]:
        """Atomically move the station's pending runs (and any left by a failed attempt) to its
        running marker; module -> batch ids."""
        pipe = self.r.pipeline(transaction=False)
        self._take(keys=[self.keys.pending(station), self.running_key(station)], args=[now_ms, job_id],
                   client=pipe)
        pipe.zadd(self.running_index, {station: now_ms})
        reply = pipe.execute()[0]
        runs = {_text(reply[i]): _text(reply[i + 1]).split() for i in range(0, len(reply), 2)}
        if not runs:
            self.r.zrem(self.running_index, station)
        return runs

    def queue_done(self, pipe: Any, station: str) -> None:
        """Queue the removal of the station's running marker (every taken run was reported)."""
        pipe.delete(self.running_key(station))
        pipe.zrem(self.running_index, station)

    def running(self, station: str) -> dict[str, str]:
        return {_text(k): _text(v) for k, v in self.r.hgetall(self.running_key(station)).items()}

    def pending(self, station: str) -> dict[str, str]:
        return {_text(k): _text(v) for k, v in self.r.hgetall(self.keys.pending(station)).items()}

    def reclaim_lost(self, cutoff_ms: int, limit: int = 100) -> dict[str, dict[str, list[str]]]:
        """Take the runs of jobs that started before `cutoff_ms` and never finished:
        station -> module -> batch ids. Safe with many sweepers (the script decides)."""
        stations = [_text(s) for s in self.r.zrangebyscore(self.running_index, "-inf", cutoff_ms, start=0, num=limit)]
        if not stations:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for s in stations:
            self._reclaim(keys=[self.running_key(s)], args=[cutoff_ms], client=pipe)
        replies = pipe.execute()
        out: dict[str, dict[str, list[str]]] = {}
        post = self.r.pipeline(transaction=False)
        for s, reply in zip(stations, replies, strict=True):
            if not reply or _text(reply[0]) == "lost":
                post.zrem(self.running_index, s)
            if reply and _text(reply[0]) == "lost":
                runs = {_text(reply[i]): _text(reply[i + 1]).split() for i in range(1, len(reply), 2)}
                if runs:
                    out[s] = runs
        if len(post):
            post.execute()
        return out
