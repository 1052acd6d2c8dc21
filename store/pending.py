"""Coalescing markers: which runs of a station wait in its queued job, and which a job has taken.

`sf:{S}:pending` (hash) — module -> batch id of the run waiting for the station's job,
`_d:<module>` = that batch's deadline (ms), plus `_job` = the id of the RQ job that will take
them. At most one pending run per (module, station) (spec §6.5): a trigger that finds its
module pending is absorbed while the pending run's batch is open. Once that batch has closed
(the job waited past its deadline: workers down, queue backlog) the run moves to the new
trigger's batch instead, so a closed batch never swallows a new message's run; the run
itself still happens once, on the newest windows. A trigger that finds no `_job` starts a
new job; every later trigger joins that job until it starts.

`sf:{S}:running:<job id>` (hash) — module -> space-separated batch ids that job took, plus
`_started` (ms). One marker per job, so two jobs of a station running at once (the second
enqueued after the first took its runs) never see each other's runs. A job that dies
leaves its marker behind: its RQ retry (same job id) runs those modules again, and the
sweeper reports them `lost` once they are older than the job timeout. `sf:running` (zset)
indexes the markers ("<station> <job id>", stations hold no whitespace) by start time.

Both scripts touch only keys tagged `{S}`, so they are Redis-Cluster safe; the global
`sf:running` index is written in the same pipeline, outside the script.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from store.keys import Keys
from store.scripts import LuaScript, ScriptPipeline

#: pending markers of a station whose job vanished are not kept for ever
PENDING_EXPIRE_MS = 7 * 86_400_000

_MARK = """
-- KEYS[1] pending hash; ARGV: proposed job id, expire_ms, now_ms, then module, batch_id,
-- deadline_ms triples. Returns {job_id, new (1 = this call claimed the job slot), flag per run}
-- flag: 1 = now pending, 2 = already pending with the same batch (a replay), 0 = absorbed.
-- A pending run absorbs a trigger only while its own batch is open (`_d:<module>` = that
-- batch's deadline): a run whose batch has closed (expired while the job waited) is moved to
-- the new batch instead, so the new message's batch expects the station and gets its result.
-- A new run is *reserved* ("?<batch>"): no job takes it before `commit` (called once its
-- batch exists), so a job never reports to a batch that is not there yet.
local pk = KEYS[1]
local now = tonumber(ARGV[3])
local job = redis.call('HGET', pk, '_job')
local new = 0
if not job then
  job = ARGV[1]
  new = 1
  redis.call('HSET', pk, '_job', job)
end
local out = {job, new}
for i = 4, #ARGV, 3 do
  local m = ARGV[i]
  local cur = redis.call('HGET', pk, m)
  if cur == ARGV[i + 1] or cur == '?' .. ARGV[i + 1] then
    out[#out + 1] = 2
  elseif cur and tonumber(redis.call('HGET', pk, '_d:' .. m) or '0') > now then
    out[#out + 1] = 0
  else
    redis.call('HSET', pk, m, '?' .. ARGV[i + 1], '_d:' .. m, ARGV[i + 2])
    out[#out + 1] = 1
  end
end
redis.call('PEXPIRE', pk, ARGV[2])
return out
"""

_COMMIT = """
-- KEYS[1] pending hash; ARGV: module, batch_id pairs. Makes reserved runs takeable (their
-- batches exist now); a run moved on to another batch meanwhile is left as it is.
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == '?' .. ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""

_TAKE = """
-- KEYS[1] pending, KEYS[2] this job's running marker; ARGV: now_ms
-- Moves every committed pending run to the marker (merged with runs a failed attempt of the
-- same job left there) and returns the merged module -> batch ids list. Reserved runs
-- ("?<batch>", batch not created yet) stay pending for the job the scheduler enqueues next.
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
local reserved = false
for i = 1, #p, 2 do
  if string.sub(p[i + 1], 1, 1) == '?' then
    reserved = true
  else
    add(p[i], p[i + 1])
  end
end
if reserved then
  for i = 1, #p, 2 do
    if string.sub(p[i + 1], 1, 1) ~= '?' and string.sub(p[i], 1, 2) ~= '_d' then
      redis.call('HDEL', KEYS[1], p[i])
    end
  end
else
  redis.call('DEL', KEYS[1])
end
local out = {}
if #order == 0 then
  redis.call('DEL', KEYS[2])
  return out
end
local args = {'_started', ARGV[1]}
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


_SCRIPTS = {"mark": LuaScript("mark", _MARK), "commit": LuaScript("commit", _COMMIT), "take": LuaScript("take", _TAKE),
            "reclaim": LuaScript("reclaim", _RECLAIM)}


@dataclass(frozen=True, slots=True)
class Marked:
    """The outcome of marking one station's runs pending."""

    station: str
    job_id: str  # the job that will take the runs (new or already queued)
    new_job: bool  # this call opened the job slot: a job must be enqueued
    flags: tuple[int, ...]  # per run: 1 pending now, 2 replay of a pending run, 0 absorbed


def _text(v: Any) -> str:  # a Redis reply: bytes, or str on a decoding client
    return v.decode() if isinstance(v, bytes) else v


class PendingRuns:
    def __init__(self, r: redis.Redis, prefix: str = "sf") -> None:
        self.r = r
        self.keys = Keys(prefix)
        self.running_index = f"{prefix}:running"
        self._mark = _SCRIPTS["mark"]
        self._take = _SCRIPTS["take"]
        self._commit = _SCRIPTS["commit"]
        self._reclaim = _SCRIPTS["reclaim"]

    def running_key(self, station: str, job_id: str) -> str:
        return f"{self.keys.station_base(station)}running:{job_id}"

    @staticmethod
    def _member(station: str, job_id: str) -> str:
        return f"{station} {job_id}"

    def mark(self, runs: Mapping[str, Sequence[tuple[str, str, int]]], job_ids: Mapping[str, str],
             now_ms: int) -> list[Marked]:
        """Mark runs pending, one script per station, one round trip.

        `runs` maps station -> [(module, batch_id, batch deadline ms)] (one entry per module);
        `job_ids` the job id proposed for each station (used when the station has no job
        waiting). A run already pending absorbs the new one only while its own batch is open
        (deadline after `now_ms`); otherwise the pending run moves to the new batch."""
        stations = list(runs)
        if not stations:
            return []
        pipe = ScriptPipeline(self.r)
        for s in stations:
            args: list[Any] = [job_ids[s], PENDING_EXPIRE_MS, now_ms]
            for module, batch, deadline in runs[s]:
                args += [module, batch, deadline]
            pipe.call(self._mark, [self.keys.pending(s)], args)
        out = []
        for s, reply in zip(stations, pipe.execute(), strict=True):
            out.append(Marked(s, _text(reply[0]), int(reply[1]) == 1, tuple(int(x) for x in reply[2:])))
        return out

    def queue_commit(self, pipe: ScriptPipeline, station: str, runs: Sequence[tuple[str, str]]) -> None:
        """Queue the commit of reserved runs [(module, batch id)] once their batches exist
        (in the scheduler's batch-creation pipeline, after the creations)."""
        if runs:
            args: list[Any] = []
            for module, batch in runs:
                args += [module, batch]
            pipe.call(self._commit, [self.keys.pending(station)], args)

    def take(self, station: str, job_id: str, now_ms: int) -> dict[str, list[str]]:
        """Atomically move the station's pending runs (and any a failed attempt of this same
        job left) to the job's running marker; module -> batch ids."""
        pipe = ScriptPipeline(self.r)
        at = self.queue_take(pipe, station, job_id, now_ms)
        return self.took(station, job_id, pipe.execute()[at])

    def queue_take(self, pipe: ScriptPipeline, station: str, job_id: str, now_ms: int) -> int:
        """`take` queued on the caller's pipeline (a job reads more in the same round trip);
        returns where its reply is, for `took`."""
        at = pipe.call(self._take, [self.keys.pending(station), self.running_key(station, job_id)], [now_ms])
        pipe.pipe.zadd(self.running_index, {self._member(station, job_id): now_ms})
        return at

    def took(self, station: str, job_id: str, reply: Any) -> dict[str, list[str]]:
        """The runs of a queued take (module -> batch ids); nothing taken: unindex the job."""
        runs = {_text(reply[i]): _text(reply[i + 1]).split() for i in range(0, len(reply), 2)}
        if not runs:
            self.r.zrem(self.running_index, self._member(station, job_id))
        return runs

    def queue_done(self, pipe: Any, station: str, job_id: str) -> None:
        """Queue the removal of the job's running marker (every taken run was reported)."""
        pipe.delete(self.running_key(station, job_id))
        pipe.zrem(self.running_index, self._member(station, job_id))

    def queue_forget(self, pipe: Any, station: str, job_id: str, modules: Sequence[str]) -> None:
        """Queue the removal of reported runs from the job's running marker (the job goes on
        with others): a retry or the sweeper then settles only the runs not yet reported."""
        if modules:
            pipe.hdel(self.running_key(station, job_id), *modules)

    def release(self, station: str, job_id: str) -> dict[str, list[str]]:
        """Take back the runs a job still holds (its failure callback reports them failed)."""
        return self._reclaim_one(station, job_id, cutoff_ms=2**62)

    def running(self, station: str, job_id: str) -> dict[str, str]:
        return {_text(k): _text(v) for k, v in self.r.hgetall(self.running_key(station, job_id)).items()}

    def pending(self, station: str) -> dict[str, str]:
        return {_text(k): _text(v) for k, v in self.r.hgetall(self.keys.pending(station)).items()}

    def _reclaim_one(self, station: str, job_id: str, cutoff_ms: int) -> dict[str, list[str]]:
        pipe = ScriptPipeline(self.r)
        pipe.call(self._reclaim, [self.running_key(station, job_id)], [cutoff_ms])
        pipe.pipe.zrem(self.running_index, self._member(station, job_id))
        reply = pipe.execute()[0]
        if not reply or _text(reply[0]) != "lost":
            return {}
        return {_text(reply[i]): _text(reply[i + 1]).split() for i in range(1, len(reply), 2)}

    def reclaim_lost(self, cutoff_ms: int, limit: int = 100) -> dict[tuple[str, str], dict[str, list[str]]]:
        """Take the runs of jobs that started before `cutoff_ms` and never finished:
        (station, job id) -> module -> batch ids. Safe with many sweepers (the script decides)."""
        members = [_text(m) for m in self.r.zrangebyscore(self.running_index, "-inf", cutoff_ms, start=0, num=limit)]
        if not members:
            return {}
        pairs = [tuple(m.rsplit(" ", 1)) for m in members]
        pipe = ScriptPipeline(self.r)
        for station, job_id in pairs:
            pipe.call(self._reclaim, [self.running_key(station, job_id)], [cutoff_ms])
        replies = pipe.execute()
        out: dict[tuple[str, str], dict[str, list[str]]] = {}
        post = self.r.pipeline(transaction=False)
        for member, (station, job_id), reply in zip(members, pairs, replies, strict=True):
            status = _text(reply[0]) if reply else ""
            if status != "live":
                post.zrem(self.running_index, member)
            if status == "lost":
                runs = {_text(reply[i]): _text(reply[i + 1]).split() for i in range(1, len(reply), 2)}
                if runs:
                    out[(station, job_id)] = runs
        if len(post):
            post.execute()
        return out
