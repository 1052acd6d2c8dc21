"""The station job: run every pending module of one station, in dependency order, in one job.

Round trips per job: take the pending runs (1, with the replay check of the batches the job
was enqueued for: a replayed run is a no-op), read every window the modules need (1), then
one write per wave of modules that ended together (usually 1 for the whole job), each with
what those modules produced, in this order: their ok outputs and order cursor moves (one
script, `store.job_writes`), their reports (one tracker script each), their removal from the
job's running marker (the whole marker with the last wave) and the run counters. A report
that completes a batch (or finds it already closed) costs one more round trip, for the due
index and the batch counters (`BatchTracker.reports_done`). A batch completed by a report is
uploaded by this job, or, with `background_upload` (`stationflow worker`), handed to the
process's upload thread so the job does not wait for Kafka's acks (workers/upload.py).

Why per module and not once per job: a module reports as soon as it ends, so one slow module
(say 8 s) never makes a sibling's 5 s batch expire. Modules whose in-job dependencies have
ended run side by side, each on its own lane (`workers.lanes`); a dependent module waits only
for its own dependencies and gets their fresh results in memory. A job that dies midway has
stored the runs that ended and removed them from its running marker; its retry (same job id)
or the sweeper's `lost` reports settle the rest, so no run is reported twice.

Each module's `_data_quality` ages are taken at that module's start (`now_ms` plus the time
the job has run), not at the job's start.
"""

from __future__ import annotations

import logging
import math
import queue
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from parsers.batches import module_of
from parsers.inputs import build_input
from store.counters import queue_incr_many
from store.scripts import ScriptPipeline
from store.tracker import Normalised, Report
from workers import context as wctx
from workers import events, lanes, runs
from workers.lanes import AlgorithmTimeout, call_hook, call_with_timeout
from workers.scheduling import BATCHES_META
from workers.upload import observe_batch

log = logging.getLogger(__name__)

RUNS_GROUP = "runs"


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
    writes: int = 0  # write round trips (one per wave of modules that ended together)

    def as_dict(self) -> dict[str, Any]:
        return {"station": self.station,
                "runs": {r.module: r.outcome if r.reason is None else f"failed:{r.reason}" for r in self.runs},
                "skipped_replays": self.skipped_replays, "uploaded": self.uploaded, "queued": self.queued}


def run_station(station_id: str) -> dict[str, Any]:
    """The RQ job function (enqueued by `workers.scheduling.schedule`, which lists the batches
    of the runs it put in the job in the job's meta: see `execute`)."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        return execute(wctx.current(), station_id, "direct").as_dict()
    hint = job.meta.get(BATCHES_META) if job.meta else None
    return execute(wctx.current(), station_id, job.id, batch_hint=hint or ()).as_dict()


def execute(ctx: wctx.WorkerContext, station: str, job_id: str, now_ms: int | None = None,
            batch_hint: Sequence[str] = ()) -> JobSummary:
    """Run the station's pending runs. `batch_hint`: batches the job probably takes (those it
    was enqueued for); their replay check goes in the take's round trip, and only runs that
    joined the job later need a round trip of their own for it."""
    t0 = time.perf_counter()
    summary = JobSummary(station)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    todo = _take(ctx, station, job_id, now_ms, batch_hint, summary)
    if todo is None:
        events.count("jobs", outcome="empty")
        return summary
    cat = ctx.catalogue
    unknown = [mod for mod in todo if mod not in cat.by_module or cat.by_module[mod].runs != "local"]
    order = cat.sort_modules(mod for mod in todo if mod not in unknown)
    windows = ctx.store.read_station(station, order, now_ms, memo=ctx.hourly_memo) if order else None
    job = _StationRun(ctx, station, job_id, todo, windows, now_ms, t0, summary)
    for mod in unknown:  # configuration changed under a queued job: nothing to run it with
        job.end(mod, time.perf_counter(), reason="not_ready")
    job.run(order)
    events.count("jobs", outcome="ok")
    events.sample("job_seconds", time.perf_counter() - t0)
    return summary


def _take(ctx: wctx.WorkerContext, station: str, job_id: str, now_ms: int, batch_hint: Sequence[str],
          summary: JobSummary) -> dict[str, list[str]] | None:
    """Take the station's pending runs; module -> batches still to report to (a run whose
    every batch already holds this station's report is a replay, counted and left out).
    None when there was nothing to take."""
    reported = f"e:{station}"
    batch_key = ctx.tracker.keys.batch
    sp = ScriptPipeline(ctx.r)
    at = ctx.pending.queue_take(sp, station, job_id, now_ms)
    hinted = list(dict.fromkeys(batch_hint))
    first = len(sp)
    for b in hinted:
        sp.pipe.hget(batch_key(b), reported)
    replies = sp.execute()
    taken = ctx.pending.took(station, job_id, replies[at])
    if not taken:
        return None
    state = dict(zip(hinted, replies[first:], strict=True))
    unknown_state = [b for bs in taken.values() for b in bs if b not in state]
    if unknown_state:
        pipe = ctx.r.pipeline(transaction=False)
        for b in unknown_state:
            pipe.hget(batch_key(b), reported)
        state.update(zip(unknown_state, pipe.execute(), strict=True))
    done = {b for bs in taken.values() for b in bs if state[b] is not None and state[b] not in (b"-", "-")}
    todo: dict[str, list[str]] = {}
    for mod, bs in taken.items():
        open_bs = [b for b in bs if b not in done] if done else bs
        if open_bs:
            todo[mod] = open_bs
        else:
            summary.skipped_replays += 1
    return todo


@dataclass
class _Ended:
    module: str
    outcome: str
    reason: str | None
    norm: Normalised | None
    inp: Any
    cursors: list[tuple[str, str, int]]


@dataclass
class _Running:
    call: lanes.Call
    inp: Any
    windows: dict[str, Any]
    started: float  # perf_counter
    deadline: float  # perf_counter


class _StationRun:
    """The modules of one job: started as soon as their in-job dependencies have ended, each
    written and reported as soon as it (with any module that ended at the same time) ends."""

    def __init__(self, ctx: wctx.WorkerContext, station: str, job_id: str, todo: dict[str, list[str]],
                 windows: Any, now_ms: int, t0: float, summary: JobSummary) -> None:
        self.ctx, self.station, self.job_id, self.todo = ctx, station, job_id, todo
        self.windows, self.now_ms, self.t0, self.summary = windows, now_ms, t0, summary
        self.fresh: dict[str, dict[str, Any]] = {}  # module -> its output of this job (for dependents)
        self.not_ok: set[str] = set()
        self.ended: set[str] = set()
        self.unwritten: list[_Ended] = []
        self.running: dict[str, _Running] = {}
        self.counts: Counter[str] = Counter()
        self.shared: dict[str, Any] = {}  # parsed windows reused by the job's modules (build_input)
        self.done: queue.SimpleQueue[lanes.Call] = queue.SimpleQueue()

    def run(self, order: Sequence[str]) -> None:
        cat = self.ctx.catalogue
        remaining = list(order)
        in_job = set(order)
        while True:
            for mod in list(remaining):
                if all(d not in in_job or d in self.ended for d in cat.by_module[mod].deps):
                    remaining.remove(mod)
                    self.start(mod)
            if any(all(d not in in_job or d in self.ended for d in cat.by_module[mod].deps) for mod in remaining):
                continue  # a module ended at once (not ready, bad input): its dependents can start
            if not self.running:
                break
            if self.unwritten:
                self.write(last=False)
            self.wait()
        self.write(last=True)

    def start(self, mod: str) -> None:
        spec = self.ctx.catalogue.by_module[mod]
        started = time.perf_counter()
        try:
            w = self.windows.windows_for(mod)
            for dep in spec.deps:
                if dep in self.fresh:
                    w[dep] = self.fresh[dep]
            start_ms = self.now_ms + int((started - self.t0) * 1000)
            inp = build_input(self.ctx.catalogue, mod, self.station, w, start_ms, self.shared)
            not_ready = runs.check_ready(spec, inp, self.not_ok)
        except Exception as e:  # noqa: BLE001 - building the input failed: report, keep going
            log.exception("station %s module %s: input could not be built: %s", self.station, mod, e)
            self.end(mod, started, reason="exception")
            return
        if not_ready is not None:
            self.end(mod, started, reason=not_ready.reason)
            return
        call = lanes.submit(lanes.Call(self.ctx.algorithms[mod], (self.station, inp), self.done, tag=mod))
        timeout = spec.run_timeout_s
        self.running[mod] = _Running(call, inp, w, started, started + timeout if timeout and timeout > 0 else math.inf)

    def wait(self) -> None:
        """Wait for the next module to end (or the nearest run timeout), then take every
        module that has ended by now."""
        nearest = min(r.deadline for r in self.running.values())
        timeout = None if nearest == math.inf else max(0.0, nearest - time.perf_counter())
        try:
            self.collect(self.done.get(timeout=timeout))
        except queue.Empty:
            pass
        while True:
            try:
                self.collect(self.done.get_nowait())
            except queue.Empty:
                break
        now = time.perf_counter()
        for mod, r in list(self.running.items()):
            if r.deadline <= now:
                del self.running[mod]
                lanes.abandon(r.call)
                timed_out = lanes.AlgorithmTimeout(f"no result after {r.deadline - r.started:g} s")
                run = runs.classify_error(self.station, mod, timed_out)
                self.end(mod, r.started, reason=run.reason, inp=r.inp)

    def collect(self, call: lanes.Call) -> None:
        mod = call.tag
        r = self.running.get(mod)
        if r is None or r.call is not call:
            return  # a call that timed out earlier: its lane was abandoned
        del self.running[mod]
        lanes.release(call)
        if call.error is not None:
            if not isinstance(call.error, Exception):
                raise call.error
            run = runs.classify_error(self.station, mod, call.error)
            self.end(mod, r.started, reason=run.reason, inp=r.inp)
            return
        cursors = []
        for alias in self.ctx.order_inputs[mod]:  # it received the closed seconds after its cursor
            seconds = r.windows.get(alias)
            if seconds:
                cursors.append((mod, alias, max(s["seq"] for s in seconds)))
        run = runs.classify_value(self.station, call.value)
        self.end(mod, r.started, reason=run.reason, norm=run.result, inp=r.inp, cursors=cursors)

    def end(self, mod: str, started: float, *, reason: str | None = None, norm: Normalised | None = None,
            inp: Any = None, cursors: list[tuple[str, str, int]] | None = None) -> None:
        seconds = time.perf_counter() - started
        outcome = "failed" if reason is not None else "none" if norm is None else "ok"
        if outcome == "ok":
            self.fresh[mod] = {"ts": self.now_ms, "src": "local", "payload": norm.value}  # type: ignore[union-attr]
        else:
            self.not_ok.add(mod)
        self.ended.add(mod)
        label = outcome if reason is None else f"failed:{reason}"
        self.counts[f"{mod}:{label}"] += 1
        self.counts[f"{mod}:us"] += int(seconds * 1e6)
        events.count("runs", module=mod, outcome=label)
        events.sample("algorithm_seconds", seconds, module=mod)
        if norm is not None:
            events.count_fixups(mod, norm.nonfinite, norm.mismatch, norm.wrapped)
        self.summary.runs.append(RunOutcome(mod, outcome, reason, seconds, self.todo[mod]))
        self.unwritten.append(_Ended(mod, outcome, reason, norm if outcome == "ok" else None, inp, cursors or []))

    def write(self, last: bool) -> None:
        """One round trip with what the ended modules produced, in this order: outputs and
        cursors, reports (a report may complete a batch), their removal from the running
        marker (the marker itself with the `last` write) and the run counters."""
        ctx, station, ended = self.ctx, self.station, self.unwritten
        self.unwritten = []
        outputs = [(e.module, e.norm.value) for e in ended if e.norm is not None]
        cursors = [c for e in ended for c in e.cursors]
        reports = [_report(b, station, e) for e in ended for b in self.todo[e.module]]
        sp = ScriptPipeline(ctx.r)
        ctx.writes.queue(sp, station, outputs, cursors, self.now_ms)
        at = ctx.tracker.queue_reports(sp, reports, int(time.time() * 1000))
        if last:
            ctx.pending.queue_done(sp.pipe, station, self.job_id)
        else:
            ctx.pending.queue_forget(sp.pipe, station, self.job_id, [e.module for e in ended])
        queue_incr_many(sp, ctx.tracker.keys.counters(RUNS_GROUP), self.counts)
        self.counts = Counter()
        replies = sp.execute()
        self.summary.writes += 1
        rep = ctx.tracker.reports_done(reports, [replies[i] for i in at], int(time.time() * 1000))
        self.summary.statuses.update(rep.statuses)
        if ctx.result_handler is not None:
            for e in ended:
                if e.norm is not None:
                    _hook(ctx.result_handler, station, e.inp, e.norm.value)
        self._hand_over(rep)

    def _hand_over(self, rep: Any) -> None:
        """Upload the batches the reports completed (or queue them for the upload thread) and
        count the ones skipped."""
        ctx = self.ctx
        if rep.claimed and ctx.uploader is not None:
            if ctx.background_upload:
                ctx.uploader.submit(rep.claimed)
                self.summary.queued += [b.batch_id for b in rep.claimed]
            else:
                ok = ctx.uploader.upload(rep.claimed)
                self.summary.uploaded += [b.batch_id for b, good in zip(rep.claimed, ok, strict=True) if good]
        for bid in rep.skipped:
            events.count("batches", module=module_of(bid), outcome="skipped")


def _report(batch: str, station: str, e: _Ended) -> Report:
    """The report of one ended run to one of its batches."""
    n = e.norm
    if n is None:
        return Report(batch, station, e.outcome, None, e.reason)
    return Report(batch, station, e.outcome, n.json, e.reason, n.nonfinite, bool(n.mismatch), bool(n.wrapped))


def _hook(fn: Any, station: str, inp: Any, result: Any) -> None:
    try:
        call_hook(fn, station, inp, result)
    except Exception:  # noqa: BLE001 - a hook never fails a run
        log.exception("result_handler failed for station %s", station)


def on_job_failure(job: Any, connection: Any, *exc_info: Any) -> None:
    """RQ failure callback: once no retry is left, every run the job still holds is reported
    failed (exception) so its batches complete instead of waiting for their deadline."""
    if job.retries_left:
        return
    station = job.args[0]
    ctx = wctx.current()
    runs = ctx.pending.release(station, job.id)
    reports = [Report(b, station, "failed", None, "exception") for mod, bs in runs.items() for b in bs]
    for mod in runs:
        events.count("runs", module=mod, outcome="failed:exception")
    rep = ctx.tracker.report(reports, int(time.time() * 1000))
    if rep.claimed and ctx.uploader is not None:
        if ctx.background_upload:
            ctx.uploader.submit(rep.claimed)
        else:
            ctx.uploader.upload(rep.claimed)
    events.count("jobs", outcome="failed")


__all__ = ["run_station", "execute", "on_job_failure", "call_with_timeout", "AlgorithmTimeout", "observe_batch"]
