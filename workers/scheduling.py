"""From planned runs to pending markers, batches and queued station jobs (spec §6.5, §6.6).

Called by the ingester once per poll, after the window writes. Three round trips whatever
the poll size:

1. mark the runs pending (one script per station): a run whose module is already pending
   for the station, in a batch still open, is absorbed by that run and left out of its
   batch; a new run is reserved (no job takes it yet); with rate control (`min_interval_s`)
   a module released less than the interval ago is deferred instead (its batch expects the
   station, deadline extended by the deferral) or absorbed by the deferred run already
   waiting; `release_deferred` (every sweeper) makes deferred runs pending;
2. create the batches (create-if-absent, expected = the runs not absorbed), commit the
   reserved runs (now takeable: their batches exist) and, in the same pipeline, read the
   status of every job the stations will rely on;
3. enqueue one RQ job per station that needs one (`Queue.enqueue_many`, one pipeline).

Replays are idempotent: the same message maps to the same batch ids, a run still pending
with the same batch id counts as the same run, and a job that is still queued is not
enqueued twice. With the ingester's replay marks (`store.marks`), step 1 also gates each run
by the mark of its message and advances the station's marks in the same script; a global
alias's mark moves after step 3. A pending run whose batch has closed (its job waited past the deadline)
never absorbs a new trigger: it moves to the new batch (`store.pending`). A station whose job vanished (TTL, flushed queue) while its runs stayed
pending gets a new job at its next trigger.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Queue, Retry
from rq.callbacks import Callback
from rq.job import Job
from rq.serializers import JSONSerializer

from parsers.batches import PlannedRun
from parsers.catalogue import Catalogue
from store.marks import MarkPlan, advance_marks
from store.pending import (
    FLAG_ABSORBED,
    FLAG_DEFERRED,
    FLAG_PENDING,
    FLAG_RATE_LIMITED,
    FLAG_REPLAY,
    FLAG_SCHEDULED,
    PendingRuns,
)
from store.scripts import ScriptPipeline
from store.tracker import BatchTracker, NewBatch

#: the RQ job function and its failure callback, by dotted path (JSON jobs carry names only)
JOB_FUNCTION = "workers.jobs.run_stations"
FAILURE_CALLBACK = "workers.jobs.on_job_failure"

#: job meta key: per station, the batch ids of the runs a job was enqueued for; the job checks
#: them for replays in the round trip that takes its runs (workers.jobs.execute_group's hints)
BATCHES_META = "batches"
#: stations per job: RQ's own work per job (~2 ms of worker CPU) is shared by the group
DEFAULT_GROUP_SIZE = 16

#: statuses of a job that has not started yet (so it will still take the pending runs)
_WAITING = {b"queued", b"scheduled", b"deferred"}
_JOB_ID_BAD = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class ScheduleResult:
    enqueued: list[str] = field(default_factory=list)  # job ids enqueued by this call
    joined: int = 0  # stations whose runs joined a job already waiting
    runs: int = 0  # runs now pending (expected in their batch)
    absorbed: Counter[str] = field(default_factory=Counter)  # module -> runs absorbed (coalescing)
    rate_limited: Counter[str] = field(default_factory=Counter)  # module -> absorbed by a deferred run
    deferred: Counter[str] = field(default_factory=Counter)  # module -> runs deferred by the rate limit
    replayed: int = 0  # runs already pending with the same batch id
    #: runs of messages at or below their replay mark that no job needs any more (store.marks)
    scheduled_before: list[PlannedRun] = field(default_factory=list)
    batches_created: int = 0
    created: Counter[str] = field(default_factory=Counter)  # module -> batches created
    batches_existing: int = 0  # replays: the batch was there already


def job_id_for(station: str, batch_ids: Iterable[str]) -> str:
    """Deterministic RQ job id: "st-<station>-<hash>", only [A-Za-z0-9_-] (RQ's rule)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(station.encode())
    for b in sorted(batch_ids):
        h.update(b"\0" + b.encode())
    return f"st-{_JOB_ID_BAD.sub('_', station)[:96]}-{h.hexdigest()}"


def group_job_id(stations: Iterable[str], salt: str) -> str:
    """Deterministic RQ job id of a station group: "gr-<hash of the stations and `salt`>"
    (the same poll replayed gives the same ids, so a waiting job is not enqueued twice)."""
    h = hashlib.blake2b(digest_size=10)
    for s in stations:
        h.update(s.encode() + b"\0")
    h.update(salt.encode())
    return f"gr-{h.hexdigest()}"


def group_proposals(per_station: Mapping[str, Iterable[str]], size: int) -> dict[str, str]:
    """station -> the id of the job it would get: the stations in their order, `size` a
    job, each group's id from its stations and their batch ids."""
    stations = list(per_station)
    size = max(1, size)
    out: dict[str, str] = {}
    for i in range(0, len(stations), size):
        part = stations[i:i + size]
        salt = "\0".join(b for st in part for b in sorted(per_station[st]))
        jid = group_job_id(part, salt)
        out.update((st, jid) for st in part)
    return out


def job_timeout_s(catalogue: Catalogue) -> int:
    """RQ's hard limit for one station job: every local module at its own run timeout, plus
    slack for the store round trips. Also the age after which a running marker counts lost."""
    return int(math.ceil(sum(catalogue.by_module[m].run_timeout_s for m in catalogue.local_modules()))) + 30


_QUEUES: dict[tuple[int, str], Queue] = {}


def station_queue(r: redis.Redis, name: str) -> Queue:
    """The RQ queue of station jobs, JSON-serialised (never pickle), cached per connection."""
    key = (id(r), name)
    q = _QUEUES.get(key)
    if q is None or q.connection is not r:
        q = Queue(name, connection=r, serializer=JSONSerializer)
        _QUEUES[key] = q
    return q


@dataclass(frozen=True)
class ScheduleOptions:
    """Where and how station jobs are enqueued; `from_settings` takes them from the
    configuration ([queue] and `prefix`)."""

    prefix: str = "sf"
    queue: str = "stationflow"
    #: unset (the default): a queued job waits for a worker however long that takes, so data
    #: ingested while no worker runs is processed when workers return. Set, RQ drops a job that
    #: waited longer; its runs stay pending and the station's next trigger enqueues a new job.
    job_ttl_s: int | None = None
    result_ttl_s: int = 60
    failure_ttl_s: int = 86_400
    retries: int = 2
    #: stations per RQ job (`workers.group`); 1: one job per station
    group_size: int = DEFAULT_GROUP_SIZE
    #: the Redis of the RQ queue when it is not the store's (queue.redis_url: the store is then
    #: a Redis Cluster, where RQ cannot run); job status reads and enqueues go there
    queue_r: Any = field(default=None, compare=False)

    def rq(self, r: Any) -> Any:
        """The client of the RQ queue, given the store's `r`."""
        return r if self.queue_r is None else self.queue_r

    @classmethod
    def from_settings(cls, settings: Any, connect: bool = False) -> ScheduleOptions:
        """From a `Settings`-like object (its `prefix` and `queue` section); with `connect`,
        a client of queue.redis_url when it is set."""
        q = settings.queue
        queue_r = settings.connect_queue() if connect and getattr(q, "redis_url", None) is not None else None
        return cls(prefix=settings.prefix, queue=q.name, job_ttl_s=q.job_ttl_s, result_ttl_s=q.result_ttl_s,
                   failure_ttl_s=q.failure_ttl_s, retries=q.retries, group_size=q.group_size, queue_r=queue_r)


def schedule(
    r: redis.Redis,
    catalogue: Catalogue,
    runs: Sequence[PlannedRun],
    options: ScheduleOptions | None = None,
    *,
    now_ms: int | None = None,
    tracker: BatchTracker | None = None,
    pending: PendingRuns | None = None,
    marks: MarkPlan | None = None,
) -> ScheduleResult:
    """Mark `runs` pending, create their batches and enqueue the station jobs they need.

    `runs` are in poll order; a (station, module) pair appearing twice keeps the first.
    `marks` (the ingester's replay marks, `store.marks`): every run is gated by the message
    of its batch id, and the marks are advanced by the stations' marking scripts (the
    stations' own) and, after the enqueue, in each global alias's slot.
    """
    opts = options or ScheduleOptions()
    prefix = opts.prefix
    out = ScheduleResult()
    if not runs and not marks:
        return out
    now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    pending = pending or PendingRuns(r, prefix)
    tracker = tracker or BatchTracker(r, prefix)

    per_station = _by_station(runs, catalogue, out)
    proposals = group_proposals({s: mods.values() for s, mods in per_station.items()}, opts.group_size)

    # (a) coalescing (a pending run absorbs a trigger only while its batch is open), rate
    # control (a module released less than its min interval ago is deferred) and the replay
    # marks, one script per station
    specs = catalogue.by_module
    deadline = {m: now_ms + int(specs[m].batch_timeout_s * 1000) for mods in per_station.values() for m in mods}
    interval = {m: int(specs[m].min_interval_s * 1000) for m in deadline}
    gates = {b: (marks.run_mark(b) if marks is not None else None) or ("", -1)
             for mods in per_station.values() for b in mods.values()}
    advance = {s: marks.station_advance(s, per_station.get(s, {}).values())
               for s in dict.fromkeys([*per_station, *marks.stations])} if marks is not None else None
    for s in advance or ():
        per_station.setdefault(s, {})
    marked = pending.mark({s: [(m, b, deadline[m], interval[m], *gates[b]) for m, b in mods.items()]
                           for s, mods in per_station.items()}, proposals, now_ms, advance)
    classified = _classify(marked, per_station, now_ms, out)
    # (b) batches, the commit of the runs reserved in (a) (no job takes a run before its
    # batch exists), the index of deferred runs, the status of the jobs the stations rely on
    status = _create_batches(r, catalogue, tracker, pending, marked, per_station, classified, now_ms, out,
                             opts.rq(r))
    # (c) one job per station that has none waiting
    slots = [JobSlot(mk.station, mk.job_id, mk.new_job,
                     [b for b, flag, nb in zip(per_station[mk.station].values(), mk.flags, mk.not_before, strict=True)
                      if flag in (FLAG_PENDING, FLAG_REPLAY) and nb == 0])
             for mk in marked if mk.job_id]
    joined, out.enqueued = enqueue_jobs(r, catalogue, slots, status, pending, opts, now_ms=now_ms)
    out.joined = joined
    if marks is not None:  # a global message's whole fan-out is scheduled now
        advance_marks(r, marks.aliases)
    tracker.flush_counters()
    return out


def _by_station(runs: Sequence[PlannedRun], catalogue: Catalogue, out: ScheduleResult) -> dict[str, dict[str, str]]:
    """station -> {module: batch id}, a (station, module) appearing twice keeping the first
    (the later ones counted absorbed); an unknown module fails before Redis is touched."""
    per_station: dict[str, dict[str, str]] = defaultdict(dict)
    for station, module, batch in runs:
        if module in per_station[station]:
            out.absorbed[module] += 1
        else:
            catalogue.module(module)
            per_station[station][module] = batch
    return per_station


def _create_batches(r: redis.Redis, catalogue: Catalogue, tracker: BatchTracker, pending: PendingRuns,
                    marked: Sequence[Any], per_station: dict[str, dict[str, str]],
                    classified: tuple[dict[str, list[str]], dict[str, str], dict[str, int]],
                    now_ms: int, out: ScheduleResult, qr: Any = None) -> dict[str, Any]:
    """One round trip: the batches (create-if-absent, deadline extended by their longest
    deferral), the commit of the reserved runs, the index of deferred runs, and the RQ status
    of every job the stations rely on, returned as job id -> status (None: no such job)."""
    expected, batch_module, deferral = classified
    sp = ScriptPipeline(r)
    for batch, stations in expected.items():
        spec = catalogue.by_module[batch_module[batch]]
        tracker.queue_create(sp, NewBatch(batch, spec.name, tuple(stations),
                                          spec.batch_timeout_s + deferral.get(batch, 0) / 1000,
                                          spec.upload_empty), now_ms)
    nb_ = 2 * len(expected)
    for mk in marked:
        pending.queue_commit(sp, mk.station, [(module, batch) for (module, batch), flag in
                                              zip(per_station[mk.station].items(), mk.flags, strict=True)
                                              if flag in (FLAG_PENDING, FLAG_REPLAY)])
    pending.queue_index_deferred(sp.pipe, {mk.station: mk.next_due for mk in marked if mk.next_due >= 0})
    first = len(sp)
    job_ids = list(dict.fromkeys(mk.job_id for mk in marked if mk.job_id))
    qr = r if qr is None else qr
    qpipe = sp.pipe if qr is r else qr.pipeline(transaction=False)  # the queue's own Redis: 2nd pipeline
    for jid in job_ids:
        qpipe.hget(Job.key_for(jid), "status")
    replies = sp.execute() + ([] if qr is r else qpipe.execute())
    for batch, made in zip(expected, replies[0:nb_:2], strict=True):
        out.created[batch_module[batch]] += int(made)
    created = sum(out.created.values())
    out.batches_created = created
    out.batches_existing = len(expected) - created
    tracker.count_created(created, sum(len(v) for v in expected.values()))
    return dict(zip(job_ids, replies[first:], strict=True))


def _classify(marked: Sequence[Any], per_station: dict[str, dict[str, str]], now_ms: int, out: ScheduleResult
              ) -> tuple[dict[str, list[str]], dict[str, str], dict[str, int]]:
    """What marking did with each run, counted into `out`: (batch id -> the stations it
    expects, batch id -> module, batch id -> the longest deferral (ms) of its stations)."""
    expected: dict[str, list[str]] = defaultdict(list)
    batch_module: dict[str, str] = {}
    deferral: dict[str, int] = {}
    for mk in marked:
        for (module, batch), flag, nb in zip(per_station[mk.station].items(), mk.flags, mk.not_before, strict=True):
            if flag == FLAG_ABSORBED:
                out.absorbed[module] += 1
                continue
            if flag == FLAG_RATE_LIMITED:
                out.rate_limited[module] += 1
                continue
            if flag == FLAG_SCHEDULED:
                out.scheduled_before.append(PlannedRun(mk.station, module, batch))
                continue
            if flag == FLAG_REPLAY:
                out.replayed += 1
            if nb > 0:  # deferred now, or a replay of a deferred run: its batch waits for it
                out.deferred[module] += flag == FLAG_DEFERRED
                deferral[batch] = max(deferral.get(batch, 0), nb - now_ms)
            out.runs += 1
            expected[batch].append(mk.station)
            batch_module[batch] = module
    return expected, batch_module, deferral


@dataclass(frozen=True, slots=True)
class JobSlot:
    """A station whose pending runs need a job: the one in its slot (`job_id`), enqueued
    unless it is still waiting; `batches` go to the job's meta (its replay check)."""

    station: str
    job_id: str
    new_job: bool
    batches: list[str]


def enqueue_jobs(r: redis.Redis, catalogue: Catalogue, slots: Sequence[JobSlot], status: dict[str, Any],
                 pending: PendingRuns, opts: ScheduleOptions, *, now_ms: int) -> tuple[int, list[str]]:
    """Enqueue one job per job id of the slots whose job is not waiting (`status`: job id ->
    RQ status, read by the caller), with every station of that id, in one pipeline; (slots
    that joined a waiting job, job ids enqueued)."""
    qr = opts.rq(r)
    q = station_queue(qr, opts.queue)
    timeout = job_timeout_s(catalogue)
    groups: dict[str, list[JobSlot]] = {}
    fixups: list[tuple[str, str]] = []
    joined = 0
    for mk in slots:
        st = status.get(mk.job_id)
        if st in _WAITING:  # a job that started has taken its runs: these need a job of their own
            joined += 0 if mk.new_job else 1
            continue
        jid = mk.job_id
        if st is not None:
            # the id belongs to a job that already ran (a replay after it took its runs) or
            # died: a fresh id, recorded as the station's job so later triggers join it
            jid = f"{jid}-{now_ms % 100_000_000}"
            fixups.append((mk.station, jid))
        group = groups.setdefault(jid, [])
        if all(x.station != mk.station for x in group):
            group.append(mk)
    datas = []
    for jid, group in groups.items():
        stations = [x.station for x in group]
        # each station's runs may each wait for their module's earlier calls in the group
        datas.append(Queue.prepare_data(
            JOB_FUNCTION, args=(stations,), timeout=timeout * len(stations), result_ttl=opts.result_ttl_s,
            ttl=opts.job_ttl_s, failure_ttl=opts.failure_ttl_s, job_id=jid,
            description=f"stations {stations[0]}" + (f" +{len(stations) - 1}" if len(stations) > 1 else ""),
            retry=Retry(max=opts.retries) if opts.retries > 0 else None, on_failure=Callback(FAILURE_CALLBACK),
            meta={BATCHES_META: {x.station: x.batches for x in group}},
        ))
    if datas:
        pipe = qr.pipeline(transaction=False)
        q.enqueue_many(datas, pipeline=pipe)
        spipe = pipe if qr is r else r.pipeline(transaction=False)
        for station, jid in fixups:
            spipe.hset(pending.keys.pending(station), "_job", jid)
        pipe.execute()
        if spipe is not pipe and fixups:
            spipe.execute()
    return joined, list(groups)


@dataclass
class ReleaseResult:
    released: Counter[str] = field(default_factory=Counter)  # module -> deferred runs made pending
    enqueued: list[str] = field(default_factory=list)
    next_due_ms: int | None = None  # the earliest deferred run still waiting (of those looked at)


#: counter group and fields of rate control, beside the ingester's (`<module>:released`)
TRIGGERS_GROUP = "triggers"


def release_deferred(r: redis.Redis, catalogue: Catalogue, options: ScheduleOptions | None = None, *,
                     now_ms: int | None = None, limit: int = 500,
                     pending: PendingRuns | None = None) -> ReleaseResult:
    """Start the deferred runs whose interval has passed (rate control): each becomes pending
    with its batch (whose deadline already covers the deferral) and its station gets a job,
    as a trigger would. Called by every sweeper; safe with many (one script per station
    decides). Four round trips whatever the number of stations (index, release, job status,
    enqueue), plus the counters."""
    out = ReleaseResult()
    opts = options or ScheduleOptions()
    now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    pending = pending or PendingRuns(r, opts.prefix)
    stations = pending.deferred_due(now_ms, limit)
    if not stations:
        return out
    proposals = group_proposals({s: [f"release:{now_ms}"] for s in stations}, opts.group_size)
    released = pending.release_deferred(stations, proposals, now_ms)
    slots = [JobSlot(x.station, x.job_id, x.new_job, [b for bs in x.runs.values() for b in bs])
             for x in released if x.job_id]
    for x in released:
        for module in x.runs:
            out.released[module] += 1
        if x.next_due >= 0:
            out.next_due_ms = x.next_due if out.next_due_ms is None else min(out.next_due_ms, x.next_due)
    qr = opts.rq(r)
    pipe = qr.pipeline(transaction=False)
    job_ids = list(dict.fromkeys(x.job_id for x in slots))
    for jid in job_ids:
        pipe.hget(Job.key_for(jid), "status")
    cpipe = pipe if qr is r else r.pipeline(transaction=False)
    for module, n in out.released.items():
        cpipe.hincrby(pending.keys.counters(TRIGGERS_GROUP), f"{module}:released", n)
    status = dict(zip(job_ids, pipe.execute(), strict=False))
    if cpipe is not pipe and out.released:
        cpipe.execute()
    _, out.enqueued = enqueue_jobs(r, catalogue, slots, status, pending, opts, now_ms=now_ms)
    return out
