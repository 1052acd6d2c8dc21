"""Coalescing markers: which runs of a station wait in its queued job, and which a job has taken.

`sf:{S}:pending` (hash) — module -> batch id of the run waiting for the station's job,
`_d:<module>` = that batch's deadline (ms), plus `_job` = the id of the RQ job that will take
them. At most one pending run per (module, station) (spec §6.5): a trigger that finds its
module pending is absorbed while the pending run's batch is open. Once that batch has closed
(the job waited past its deadline: workers down, queue backlog) the run moves to the new
trigger's batch instead, so a closed batch never swallows a new message's run; the run
itself still happens once, on the newest windows. A trigger that finds no `_job` starts a
new job; every later trigger joins that job until it starts. A new run is first *reserved*
(`?<batch id>`) and committed once its batch exists (the scheduler's batch-creation
pipeline), so a job that starts in between never reports to a batch that is not there yet.

`sf:{S}:running:<job id>` (hash) — module -> space-separated batch ids that job took, plus
`_started` (ms). One marker per job, so two jobs of a station running at once (the second
enqueued after the first took its runs) never see each other's runs. A job that dies
leaves its marker behind: its RQ retry (same job id) runs those modules again, and the
sweeper reports them `lost` once they are older than the job timeout. `sf:running` (zset;
on a cluster split into index buckets by station, `sf:running:{<bucket>}`) indexes the
markers ("<station> <job id>", stations hold no whitespace) by start time.

`sf:{S}:rate` (hash) — rate control (a module's `min_interval_s`): `_l:<module>` = when the
module's last run was released (made pending) for the station, and the *deferred* runs:
module -> batch id, `_d:<module>` its batch deadline (extended by the deferral), `_n:<module>`
not-before (last release + interval). A trigger less than the interval after the last release
becomes the deferred run (its batch expects the station); later ones are absorbed into it;
`release_deferred` makes it pending once the interval has passed. `sf:deferred` (zset)
indexes the stations with deferred runs by their earliest not-before.

The marking script also reads and advances the station's replay marks in `sf:{S}:meta`
(`store.marks`): recording a message as scheduled and reserving its runs are one step.

Every script touches only keys tagged `{S}`, declared in KEYS (Redis-Cluster safe); the running
and deferred indexes are written in the same pipeline, outside the script.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from store.connection import is_cluster
from store.keys import keys_for
from store.scripts import LuaScript, ScriptPipeline

#: pending markers of a station whose job vanished are not kept for ever
PENDING_EXPIRE_MS = 7 * 86_400_000

_RELEASE = """
-- KEYS[1] pending hash, KEYS[2] rate hash; ARGV: proposed job id, expire_ms, now_ms.
-- Moves every deferred run whose not-before has come into the pending hash (joining a run
-- already pending for the module, if any: both batches get its result) and records the
-- release as the module's last run. Returns {job_id ('' when nothing moved), new,
-- next deferred run ms (-1: none), then module, batch ids per released run}.
local pk, rk = KEYS[1], KEYS[2]
local now = tonumber(ARGV[3])
local due, next_due = {}, -1
for _, f in ipairs(redis.call('HKEYS', rk)) do
  if string.sub(f, 1, 3) == '_n:' then
    local v = tonumber(redis.call('HGET', rk, f))
    if v <= now then
      due[#due + 1] = string.sub(f, 4)
    elseif next_due < 0 or v < next_due then
      next_due = v
    end
  end
end
local out = {'', 0, next_due}
if #due == 0 then return out end
for _, m in ipairs(due) do
  local b = redis.call('HGET', rk, m)
  local dl = redis.call('HGET', rk, '_d:' .. m)
  redis.call('HDEL', rk, m, '_d:' .. m, '_n:' .. m)
  redis.call('HSET', rk, '_l:' .. m, now)
  if b then
    local cur = redis.call('HGET', pk, m)
    if cur then
      b = cur .. ' ' .. b
      dl = math.max(tonumber(dl), tonumber(redis.call('HGET', pk, '_d:' .. m) or '0'))
    end
    redis.call('HSET', pk, m, b, '_d:' .. m, dl)
    out[#out + 1] = m
    out[#out + 1] = b
  end
end
if #out == 3 then return out end
local job = redis.call('HGET', pk, '_job')
if not job then
  job = ARGV[1]
  out[2] = 1
  redis.call('HSET', pk, '_job', job)
end
out[1] = job
redis.call('PEXPIRE', pk, ARGV[2])
return out
"""

_COMMIT = """
-- KEYS[1] pending hash; ARGV: module, batch_id pairs. Makes reserved runs takeable (their
-- batches exist now); a run moved on to another batch meanwhile is left as it is. A
-- released deferred run may have joined the reserved one ("?<batch> <deferred batch>").
for i = 1, #ARGV, 2 do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  local r = '?' .. ARGV[i + 1]
  if v and (v == r or string.sub(v, 1, #r + 1) == r .. ' ') then
    redis.call('HSET', KEYS[1], ARGV[i], string.sub(v, 2))
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


_SCRIPTS = {"mark": LuaScript.from_file("pending_mark.lua"), "commit": LuaScript("commit", _COMMIT), "take": LuaScript("take", _TAKE),
            "reclaim": LuaScript("reclaim", _RECLAIM), "release": LuaScript("release", _RELEASE)}


@dataclass(frozen=True, slots=True)
class Marked:
    """The outcome of marking one station's runs pending."""

    station: str
    job_id: str  # the job that will take the runs (new or already queued); "" when none needs one
    new_job: bool  # this call opened the job slot: a job must be enqueued
    flags: tuple[int, ...]  # per run: FLAG_* below
    not_before: tuple[int, ...] = ()  # per run: ms from which a deferred run may start (0: now)
    next_due: int = -1  # the station's earliest deferred run (ms), -1: none


#: what marking did with a run (Marked.flags)
FLAG_ABSORBED, FLAG_PENDING, FLAG_REPLAY, FLAG_RATE_LIMITED, FLAG_DEFERRED, FLAG_SCHEDULED = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True, slots=True)
class Released:
    """Deferred runs of one station moved to its pending hash (their interval has passed)."""

    station: str
    job_id: str  # the job that takes them ("" when nothing was due)
    new_job: bool
    runs: dict[str, list[str]]  # module -> batch ids
    next_due: int  # the station's next deferred run (ms), -1: none


def _text(v: Any) -> str:  # a Redis reply: bytes, or str on a decoding client
    return v.decode() if isinstance(v, bytes) else v


class PendingRuns:
    def __init__(self, r: redis.Redis, prefix: str = "sf") -> None:
        self.r = r
        self.keys = keys_for(r, prefix)
        self._mark = _SCRIPTS["mark"]
        self._take = _SCRIPTS["take"]
        self._commit = _SCRIPTS["commit"]
        self._reclaim = _SCRIPTS["reclaim"]
        self._release = _SCRIPTS["release"]

    def running_key(self, station: str, job_id: str) -> str:
        return f"{self.keys.station_base(station)}running:{job_id}"

    @staticmethod
    def _member(station: str, job_id: str) -> str:
        return f"{station} {job_id}"

    def mark(self, runs: Mapping[str, Sequence[tuple[Any, ...]]], job_ids: Mapping[str, str], now_ms: int,
             marks: Mapping[str, Mapping[str, int]] | None = None) -> list[Marked]:
        """Mark runs pending, one script per station, one round trip.

        `runs` maps station -> [(module, batch_id, batch deadline ms[, min interval ms[,
        mark field, offset]])] (one entry per module); `job_ids` the job id proposed for each
        station (used when the station has no job waiting). A run already pending absorbs the
        new one only while its own batch is open (deadline after `now_ms`); otherwise the
        pending run moves to the new batch. With a min interval, a module released less than
        the interval ago is deferred (`FLAG_DEFERRED`, its deadline extended by the deferral)
        or absorbed by the deferred run already waiting (`FLAG_RATE_LIMITED`); `release`
        makes deferred runs pending. With a mark field (`store.marks`), a run whose message
        is at or below that mark is a replay while the station still holds it, else
        `FLAG_SCHEDULED`; `marks` (station -> {field: offset}, stations without runs allowed)
        are advanced in the same script."""
        marks = marks or {}
        stations = list(dict.fromkeys([*runs, *marks]))
        if not stations:
            return []
        pipe = ScriptPipeline(self.r)
        for s in stations:
            adv = marks.get(s, {})
            args: list[Any] = [job_ids.get(s, ""), PENDING_EXPIRE_MS, now_ms, len(adv)]
            for fld, off in adv.items():
                args += [fld, int(off)]
            for run in runs.get(s, ()):
                module, batch, deadline = run[0], run[1], run[2]
                gate = (run[4], int(run[5])) if len(run) > 5 and run[4] else ("", -1)
                args += [module, batch, deadline, run[3] if len(run) > 3 else 0, *gate]
            pipe.call(self._mark, [self.keys.pending(s), self.keys.rate(s), self.keys.meta(s)], args)
        out = []
        for s, reply in zip(stations, pipe.execute(), strict=True):
            rest = reply[3:]
            out.append(Marked(s, _text(reply[0]), int(reply[1]) == 1, tuple(int(x) for x in rest[0::2]),
                              tuple(int(x) for x in rest[1::2]), int(reply[2])))
        return out

    def deferred_due(self, now_ms: int, limit: int = 500) -> list[str]:
        """Stations whose earliest deferred run may start by `now_ms`, earliest first, at most
        `limit` in all: the first page of every index bucket in one round trip, merged."""
        pipe = self.r.pipeline(transaction=False)
        for key in self.keys.deferred_all():
            pipe.zrangebyscore(key, "-inf", now_ms, start=0, num=limit, withscores=True)
        due = sorted((score, _text(m)) for page in pipe.execute() for m, score in page)
        return [s for _, s in due[:limit]]

    def next_deferred(self) -> int | None:
        """The earliest not-before (ms) of any deferred run (every bucket), None when none waits."""
        pipe = self.r.pipeline(transaction=False)
        for key in self.keys.deferred_all():
            pipe.zrange(key, 0, 0, withscores=True)
        firsts = [int(page[0][1]) for page in pipe.execute() if page]
        return min(firsts) if firsts else None

    def queue_index_deferred(self, pipe: Any, due: Mapping[str, int]) -> None:
        """Queue index entries for stations with deferred runs (earliest not-before kept), one
        ZADD per bucket."""
        for key, entries in self._by_bucket(due).items():
            pipe.zadd(key, entries, lt=True)

    def _by_bucket(self, due: Mapping[str, int]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for station, ms in due.items():
            out.setdefault(self.keys.deferred_of(station), {})[station] = ms
        return out

    def release_deferred(self, stations: Sequence[str], job_ids: Mapping[str, str], now_ms: int) -> list[Released]:
        """Move the due deferred runs of `stations` into their pending hashes, one round trip
        plus one to re-index stations that still have deferred runs. Each station's index
        entry is removed *before* its script runs, and re-added from the script's answer, so a
        deferral marked concurrently is never lost from the index. On one Redis the removal
        and the script share a pipeline (one connection keeps their order); on Redis Cluster
        the index bucket and the station may live on different masters, whose parts of a
        pipeline run in no set order, so the removals take a round trip of their own first."""
        if not stations:
            return []
        pipe = ScriptPipeline(self.r)
        first = pipe.pipe if not is_cluster(self.r) else self.r.pipeline(transaction=False)
        for s in stations:
            first.zrem(self.keys.deferred_of(s), s)
        if first is not pipe.pipe:
            first.execute()
        at = []
        for s in stations:
            at.append(pipe.call(self._release, [self.keys.pending(s), self.keys.rate(s)],
                                [job_ids[s], PENDING_EXPIRE_MS, now_ms]))
        replies = pipe.execute()
        out = []
        for s, i in zip(stations, at, strict=True):
            reply = replies[i]
            runs = {_text(reply[j]): _text(reply[j + 1]).split() for j in range(3, len(reply), 2)}
            out.append(Released(s, _text(reply[0]), int(reply[1]) == 1, runs, int(reply[2])))
        again = {x.station: x.next_due for x in out if x.next_due >= 0}
        if again:
            post = self.r.pipeline(transaction=False)
            self.queue_index_deferred(post, again)
            post.execute()
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
        pipe.pipe.zadd(self.keys.running_of(station), {self._member(station, job_id): now_ms})
        return at

    def took(self, station: str, job_id: str, reply: Any) -> dict[str, list[str]]:
        """The runs of a queued take (module -> batch ids); nothing taken: unindex the job."""
        runs = {_text(reply[i]): _text(reply[i + 1]).split() for i in range(0, len(reply), 2)}
        if not runs:
            self.r.zrem(self.keys.running_of(station), self._member(station, job_id))
        return runs

    def queue_done(self, pipe: Any, station: str, job_id: str) -> None:
        """Queue the removal of the job's running marker (every taken run was reported)."""
        pipe.delete(self.running_key(station, job_id))
        pipe.zrem(self.keys.running_of(station), self._member(station, job_id))

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

    def deferred(self, station: str) -> dict[str, str]:
        """The station's rate hash: deferred runs and `_l:<module>` last releases."""
        return {_text(k): _text(v) for k, v in self.r.hgetall(self.keys.rate(station)).items()}

    def _reclaim_one(self, station: str, job_id: str, cutoff_ms: int) -> dict[str, list[str]]:
        pipe = ScriptPipeline(self.r)
        pipe.call(self._reclaim, [self.running_key(station, job_id)], [cutoff_ms])
        pipe.pipe.zrem(self.keys.running_of(station), self._member(station, job_id))
        reply = pipe.execute()[0]
        if not reply or _text(reply[0]) != "lost":
            return {}
        return {_text(reply[i]): _text(reply[i + 1]).split() for i in range(1, len(reply), 2)}

    def reclaim_lost(self, cutoff_ms: int, limit: int = 100) -> dict[tuple[str, str], dict[str, list[str]]]:
        """Take the runs of jobs that started before `cutoff_ms` and never finished:
        (station, job id) -> module -> batch ids, the oldest `limit` jobs of every running-index
        bucket merged. Safe with many sweepers (the script decides)."""
        pipe = self.r.pipeline(transaction=False)
        for key in self.keys.running_all():
            pipe.zrangebyscore(key, "-inf", cutoff_ms, start=0, num=limit, withscores=True)
        found = sorted((score, _text(m), key) for key, page in zip(self.keys.running_all(), pipe.execute(),
                                                                  strict=True) for m, score in page)[:limit]
        if not found:
            return {}
        pairs = [tuple(m.rsplit(" ", 1)) for _, m, _ in found]
        scripts = ScriptPipeline(self.r)
        for station, job_id in pairs:
            scripts.call(self._reclaim, [self.running_key(station, job_id)], [cutoff_ms])
        replies = scripts.execute()
        out: dict[tuple[str, str], dict[str, list[str]]] = {}
        post = self.r.pipeline(transaction=False)
        for (_, member, key), (station, job_id), reply in zip(found, pairs, replies, strict=True):
            status = _text(reply[0]) if reply else ""
            if status != "live":
                post.zrem(key, member)
            if status == "lost" and len(reply) > 1:  # the runs it held: module, batch ids
                out[(station, job_id)] = {_text(reply[i]): _text(reply[i + 1]).split() for i in range(1, len(reply), 2)}
        if len(post):
            post.execute()
        return out
