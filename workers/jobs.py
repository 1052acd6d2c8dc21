"""The station jobs: every pending module of a group of stations, in dependency order per
station, in one RQ job (`run_stations`; the scheduler groups the stations of a poll, see
`workers.group` for how the runs of a group share the job and its round trips).

Round trips per job: take the pending runs of every station of the group (1, with the replay
check of the batches the job was enqueued for: a replayed run is a no-op), read every window
the modules need (1, every station), then one write per set of runs that ended within the
write linger of each other (usually 1 for the whole group), each with what those runs
produced, in this order: their ok outputs and order cursor moves (one script per station,
`store.job_writes`), their reports (one tracker script each), their removal from the
stations' running markers (a marker itself once its station's runs have all ended) and the
run counters. A report that completes a batch (or finds it already closed) costs one more
round trip, for the due index and the batch counters (`BatchTracker.reports_done`). A batch
completed by a report is uploaded by this job, or, with `background_upload` (`stationflow
worker`), handed to the process's upload thread so the job does not wait for Kafka's acks
(workers/upload.py).

Why per run and not once per job: a run reports as soon as it ends (within the linger), so
one slow module (say 8 s) never makes another module's 5 s batch expire. A job that dies
midway has stored the runs that ended and removed them from their running markers; its retry
(same job id) or the sweeper's `lost` reports settle the rest, so no run is reported twice.

Each module's `_data_quality` ages are taken at that run's start (`now_ms` plus the time the
job has run), not at the job's start.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from store.tracker import Report
from workers import context as wctx
from workers import events
from workers import group as wgroup
from workers.group import GroupRun, take_group
from workers.lanes import AlgorithmTimeout, call_with_timeout
from workers.scheduling import BATCHES_META
from workers.upload import observe_batch

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    module: str
    outcome: str  # ok | none | failed
    reason: str | None = None
    seconds: float = 0.0
    batches: list[str] = field(default_factory=list)


@dataclass
class JobSummary:
    station: str
    runs: list[RunOutcome] = field(default_factory=list)
    skipped_replays: int = 0
    uploaded: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)  # handed to the background upload thread
    statuses: Counter[str] = field(default_factory=Counter)
    writes: int = 0  # write round trips of the job (shared by the stations of a group)

    def as_dict(self) -> dict[str, Any]:
        return {"station": self.station,
                "runs": {r.module: r.outcome if r.reason is None else f"failed:{r.reason}" for r in self.runs},
                "skipped_replays": self.skipped_replays, "uploaded": self.uploaded, "queued": self.queued}


def run_stations(stations: Sequence[str]) -> dict[str, Any]:
    """The RQ job function of a station group (enqueued by `workers.scheduling`, which lists
    per station the batches of the runs it put in the job in the job's meta)."""
    from rq import get_current_job

    job = get_current_job()
    ctx = wctx.current()
    if job is None:
        out = execute_group(ctx, stations, "direct")
    else:
        hint = job.meta.get(BATCHES_META) if job.meta else None
        out = execute_group(ctx, stations, job.id, batch_hints=hint if isinstance(hint, dict) else None)
    return {"stations": [s.as_dict() for s in out.values()]}


def run_station(station_id: str) -> dict[str, Any]:
    """The job function of one station (jobs enqueued before station groups existed, and
    `rq enqueue` by hand): a group of one."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        return execute(wctx.current(), station_id, "direct").as_dict()
    hint = job.meta.get(BATCHES_META) if job.meta else None
    return execute(wctx.current(), station_id, job.id, batch_hint=hint or ()).as_dict()


def execute(ctx: wctx.WorkerContext, station: str, job_id: str, now_ms: int | None = None,
            batch_hint: Sequence[str] = ()) -> JobSummary:
    """Run one station's pending runs (a group of one, see `execute_group`)."""
    return execute_group(ctx, [station], job_id, now_ms, {station: list(batch_hint)})[station]


def execute_group(ctx: wctx.WorkerContext, stations: Sequence[str], job_id: str, now_ms: int | None = None,
                  batch_hints: Mapping[str, Sequence[str]] | None = None,
                  linger_s: float | None = None) -> dict[str, JobSummary]:
    """Run the pending runs of `stations`. `batch_hints`: per station, the batches the job
    probably takes (those it was enqueued for); their replay check goes in the take's round
    trip, and only runs that joined the job later need a round trip of their own for it.
    `linger_s`: how long an ended run may wait to share its write (default `group.WRITE_LINGER_S`)."""
    t0 = time.perf_counter()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    stations = list(dict.fromkeys(stations))
    hints = {s: list((batch_hints or {}).get(s, ())) for s in stations}
    summaries = {s: JobSummary(s) for s in stations}
    taken = take_group(ctx, job_id, now_ms, hints)
    todo: dict[str, dict[str, list[str]]] = {}
    for station, t in taken.items():
        if t is None:
            events.count("jobs", outcome="empty")
            continue
        todo[station] = {m: bs for m, bs in t.items() if bs}
        summaries[station].skipped_replays = len(t) - len(todo[station])
    if not todo:
        return summaries
    cat = ctx.catalogue
    wanted = {s: cat.sort_modules(m for m in mods if m in cat.by_module and cat.by_module[m].runs == "local")
              for s, mods in todo.items()}
    windows = ctx.store.read_stations({s: mods for s, mods in wanted.items() if mods}, memo=ctx.hourly_memo)
    group = GroupRun(ctx, job_id, todo, windows, now_ms, t0, wgroup.WRITE_LINGER_S if linger_s is None else linger_s)
    group.run()
    for o in group.outcomes:
        summaries[o.station].runs.append(RunOutcome(o.module, o.outcome, o.reason, o.seconds, o.batches))
    first = next(iter(todo))
    summaries[first].uploaded, summaries[first].queued = group.uploaded, group.queued
    for station in todo:
        summaries[station].writes = group.writes
        events.count("jobs", outcome="ok")
    summaries[first].statuses = group.statuses
    events.sample("job_seconds", time.perf_counter() - t0)
    return summaries


def on_job_failure(job: Any, connection: Any, *exc_info: Any) -> None:
    """RQ failure callback: once no retry is left, every run the job still holds is reported
    failed (exception) so its batches complete instead of waiting for their deadline."""
    if job.retries_left:
        return
    arg = job.args[0]
    ctx = wctx.current()
    reports = []
    stations = [arg] if isinstance(arg, str) else list(arg)
    for station in stations:
        runs = ctx.pending.release(station, job.id)
        reports += [Report(b, station, "failed", None, "exception") for mod, bs in runs.items() for b in bs]
        for mod in runs:
            events.count("runs", module=mod, outcome="failed:exception")
    rep = ctx.tracker.report(reports, int(time.time() * 1000))
    if rep.claimed and ctx.uploader is not None:
        if ctx.background_upload:
            ctx.uploader.submit(rep.claimed)
        else:
            ctx.uploader.upload(rep.claimed)
    events.count("jobs", len(stations), outcome="failed")


__all__ = ["run_stations", "run_station", "execute", "execute_group", "on_job_failure", "call_with_timeout", "AlgorithmTimeout", "observe_batch"]
