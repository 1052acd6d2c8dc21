"""From planned runs to pending markers, batches and queued station jobs (spec §6.5, §6.6).

Called by the ingester once per poll, after the window writes. Three round trips whatever
the poll size:

1. mark the runs pending (one script per station): a run whose module is already pending
   for the station, in a batch still open, is absorbed by that run and left out of its
   batch; a new run is reserved (no job takes it yet);
2. create the batches (create-if-absent, expected = the runs not absorbed), commit the
   reserved runs (now takeable: their batches exist) and, in the same pipeline, read the
   status of every job the stations will rely on;
3. enqueue one RQ job per station that needs one (`Queue.enqueue_many`, one pipeline).

Replays are idempotent: the same message maps to the same batch ids, a run still pending
with the same batch id counts as the same run, and a job that is still queued is not
enqueued twice. A pending run whose batch has closed (its job waited past the deadline)
never absorbs a new trigger: it moves to the new batch (`store.pending`). A station whose
job vanished (`queue.job_ttl_s`, flushed queue) while its runs stayed pending gets a new job
at its next trigger.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Queue, Retry
from rq.callbacks import Callback
from rq.job import Job
from rq.serializers import JSONSerializer

from parsers.batches import PlannedRun
from parsers.catalogue import Catalogue
from store.pending import PendingRuns
from store.scripts import ScriptPipeline
from store.tracker import BatchTracker, NewBatch

#: the RQ job function and its failure callback, by dotted path (JSON jobs carry names only)
JOB_FUNCTION = "workers.jobs.run_station"
FAILURE_CALLBACK = "workers.jobs.on_job_failure"

#: job meta key: the batch ids of the runs a job was enqueued for; the job checks them for
#: replays in the round trip that takes its runs (workers.jobs.execute's batch_hint)
BATCHES_META = "batches"

#: statuses of a job that will still take the pending runs: a started job may have taken its
#: runs before the ones just marked were committed, so those get a job of their own (which
#: finds nothing to do when the started one took them after all)
_WAITING = {b"queued", b"scheduled", b"deferred"}
_JOB_ID_BAD = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class ScheduleResult:
    enqueued: list[str] = field(default_factory=list)  # job ids enqueued by this call
    joined: int = 0  # stations whose runs joined a job already waiting
    runs: int = 0  # runs now pending (expected in their batch)
    absorbed: Counter[str] = field(default_factory=Counter)  # module -> runs absorbed
    replayed: int = 0  # runs already pending with the same batch id
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


def schedule(
    r: redis.Redis,
    catalogue: Catalogue,
    runs: Sequence[PlannedRun],
    *,
    prefix: str = "sf",
    queue: str = "stationflow",
    now_ms: int | None = None,
    job_ttl_s: int | None = None,
    result_ttl_s: int = 60,
    failure_ttl_s: int = 86_400,
    retries: int = 2,
    tracker: BatchTracker | None = None,
    pending: PendingRuns | None = None,
) -> ScheduleResult:
    """Mark `runs` pending, create their batches and enqueue the station jobs they need.

    `runs` are in poll order; a (station, module) pair appearing twice keeps the first.
    `job_ttl_s` unset (the default): a queued job waits for a worker however long that takes,
    so data ingested while no worker runs is processed when workers return. Set, RQ drops a job
    that waited longer; its runs stay pending and the station's next trigger enqueues a new job.
    """
    out = ScheduleResult()
    if not runs:
        return out
    now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    pending = pending or PendingRuns(r, prefix)
    tracker = tracker or BatchTracker(r, prefix)

    per_station: dict[str, dict[str, str]] = defaultdict(dict)
    for station, module, batch in runs:
        if module in per_station[station]:
            out.absorbed[module] += 1
        else:
            catalogue.module(module)  # unknown module: fail loudly before touching Redis
            per_station[station][module] = batch
    proposals = {s: job_id_for(s, mods.values()) for s, mods in per_station.items()}

    # (a) coalescing (a pending run absorbs a trigger only while its batch is open)
    deadline = {m: now_ms + int(catalogue.by_module[m].batch_timeout_s * 1000)
                for mods in per_station.values() for m in mods}
    marked = pending.mark({s: [(m, b, deadline[m]) for m, b in mods.items()] for s, mods in per_station.items()},
                          proposals, now_ms)

    expected: dict[str, list[str]] = defaultdict(list)  # batch id -> stations
    batch_module: dict[str, str] = {}
    for mk in marked:
        for (module, batch), flag in zip(per_station[mk.station].items(), mk.flags, strict=True):
            if flag == 0:
                out.absorbed[module] += 1
                continue
            if flag == 2:
                out.replayed += 1
            out.runs += 1
            expected[batch].append(mk.station)
            batch_module[batch] = module

    # (b) batches, then the commit of the runs reserved in (a) (no job takes a run before its
    # batch exists), then the status of the jobs the stations rely on
    sp = ScriptPipeline(r)
    for batch, stations in expected.items():
        spec = catalogue.by_module[batch_module[batch]]
        tracker.queue_create(sp, NewBatch(batch, spec.name, tuple(stations), spec.batch_timeout_s,
                                          spec.upload_empty), now_ms)
    nb = 2 * len(expected)
    for mk in marked:
        pending.queue_commit(sp, mk.station, [(module, batch) for (module, batch), flag in
                                              zip(per_station[mk.station].items(), mk.flags, strict=True) if flag])
    first_status = len(sp)
    job_ids = list(dict.fromkeys(mk.job_id for mk in marked))
    for jid in job_ids:
        sp.pipe.hget(Job.key_for(jid), "status")
    replies = sp.execute()
    for batch, made in zip(expected, replies[0:nb:2], strict=True):
        out.created[batch_module[batch]] += int(made)
    created = sum(out.created.values())
    out.batches_created = created
    out.batches_existing = len(expected) - created
    tracker.count_created(created, sum(len(v) for v in expected.values()))
    status = dict(zip(job_ids, replies[first_status:], strict=True))

    # (c) one job per station that has none waiting
    q = station_queue(r, queue)
    timeout = job_timeout_s(catalogue)
    datas = []
    fixups: list[tuple[str, str]] = []
    seen: set[str] = set()
    for mk in marked:
        st = status.get(mk.job_id)
        if st in _WAITING:
            out.joined += 0 if mk.new_job else 1
            continue
        jid = mk.job_id
        if st is not None:
            # the id belongs to a job that started (it may have taken its runs already), ran
            # or died: a fresh id, recorded as the station's job so later triggers join it
            jid = f"{jid}-{now_ms % 100_000_000}"
            fixups.append((mk.station, jid))
        if jid in seen:
            continue
        seen.add(jid)
        batches = [b for b, flag in zip(per_station[mk.station].values(), mk.flags, strict=True) if flag]
        datas.append(Queue.prepare_data(
            JOB_FUNCTION, args=(mk.station,), timeout=timeout, result_ttl=result_ttl_s, ttl=job_ttl_s,
            failure_ttl=failure_ttl_s, job_id=jid, description=f"station {mk.station}",
            retry=Retry(max=retries) if retries > 0 else None, on_failure=Callback(FAILURE_CALLBACK),
            meta={BATCHES_META: batches},
        ))
        out.enqueued.append(jid)
    if datas:
        pipe = r.pipeline(transaction=False)
        q.enqueue_many(datas, pipeline=pipe)
        for station, jid in fixups:
            pipe.hset(pending.keys.pending(station), "_job", jid)
        pipe.execute()
    tracker.flush_counters()
    return out


def schedule_with(r: redis.Redis, settings: Any, runs: Sequence[PlannedRun],
                  now_ms: int | None = None, **kw: Any) -> ScheduleResult:
    """`schedule` with every option taken from a `stationflow.settings.Settings`."""
    q = settings.queue
    return schedule(r, settings.catalogue, runs, prefix=settings.prefix, queue=q.name, now_ms=now_ms,
                    job_ttl_s=q.job_ttl_s, result_ttl_s=q.result_ttl_s, failure_ttl_s=q.failure_ttl_s,
                    retries=q.retries, **kw)
