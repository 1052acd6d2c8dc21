"""The station job: run every pending module of one station, in dependency order, in one job.

Round trips per job, whatever the number of modules: take the pending runs (1), check which
batches already hold this station's report (1, makes a replayed run a no-op), read every
window the modules need (1), then one closing pipeline with everything the job writes, in
this order: every ok output and order cursor move (one script, `store.job_writes`), every
report (one tracker script each), the clearing of the running marker and the run counters (1).
A report that completes a batch (or finds it already closed) costs one more round trip, for
the due index and the batch counters (`BatchTracker.reports_done`). The batch completed by a
report is uploaded by this job, or, with `background_upload` (`stationflow worker`), handed to
the process's upload thread so the job does not wait for Kafka's acks (workers/upload.py).
Script calls go as plain EVALSHAs (`store.scripts`): redis-py's `Script` would add a
`SCRIPT EXISTS` round trip to every pipeline.

Outputs reach Redis when the job ends, not as each module finishes: a dependent module of the
same job gets its dependency's fresh result in memory, the result handler hook is called once
they are stored, and a job that dies midway leaves nothing stored but its running marker, so
its retry (or the sweeper's `lost` reports) settles every run as before.

Per-module timeout: the algorithm runs on a long-lived daemon thread ("lane") and the job
waits for it at most `run_timeout_s`. A signal timer is not used because RQ already owns
SIGALRM for its job timeout in the worker's main thread. A timed-out algorithm cannot be
killed: its lane is abandoned (daemon, so it never blocks the process exit) and a fresh lane
serves the next run; the job timeout of RQ remains the last resort.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from parsers.batches import module_of
from parsers.inputs import build_input
from parsers.readiness import missing_required
from stationflow import metrics as m
from store.counters import queue_incr_many
from store.scripts import ScriptPipeline
from store.tracker import Report, UnserialisableResult, normalise_result
from workers import context as wctx
from workers.algorithms import Algorithm, is_async
from workers.scheduling import BATCHES_META
from workers.upload import observe_batch

log = logging.getLogger(__name__)

RUNS_GROUP = "runs"


class AlgorithmTimeout(Exception):
    pass


class _Box:
    __slots__ = ("done", "value", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class _Lane:
    """One daemon thread that runs algorithm calls one at a time."""

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[tuple[Algorithm, str, Any, _Box]] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name="stationflow-algorithm", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            fn, station, inp, box = self.inbox.get()
            try:
                if is_async(fn):
                    box.value = asyncio.run(fn(station, inp))
                else:
                    box.value = fn(station, inp)
            except BaseException as e:  # noqa: BLE001 - handed to the job, which reports it
                box.error = e
            box.done.set()


_lane: _Lane | None = None
_lane_lock = threading.Lock()


def call_with_timeout(fn: Algorithm, station: str, inp: Any, timeout_s: float) -> Any:
    """fn(station, inp) on the lane; AlgorithmTimeout after `timeout_s` (the lane is replaced)."""
    global _lane
    with _lane_lock:
        if _lane is None:
            _lane = _Lane()
        lane = _lane
    box = _Box()
    lane.inbox.put((fn, station, inp, box))
    if not box.done.wait(timeout_s if timeout_s and timeout_s > 0 else None):
        with _lane_lock:
            if _lane is lane:
                _lane = None
        raise AlgorithmTimeout(f"no result after {timeout_s} s")
    if box.error is not None:
        raise box.error
    return box.value


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
        m.JOBS.inc(outcome="empty")
        return summary
    cat = ctx.catalogue

    # a replayed run whose every batch already holds this station's report is not run again
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
    unknown = [mod for mod in todo if mod not in cat.by_module or cat.by_module[mod].runs != "local"]
    order = cat.sort_modules(mod for mod in todo if mod not in unknown)

    windows = ctx.store.read_station(station, order, now_ms) if order else None
    fresh: dict[str, dict[str, Any]] = {}
    not_ok: set[str] = set()
    reports: list[Report] = []
    outputs: list[tuple[str, Any]] = []  # (module, normalised result) to store
    cursors: list[tuple[str, str, int]] = []  # (module, orders alias, newest seq it received)
    hooks: list[tuple[Any, Any]] = []  # (input, result) for the result handler, once stored
    counts: Counter[str] = Counter()
    shared_inputs: dict[str, Any] = {}  # parsed windows reused by the job's modules (build_input)
    for mod in unknown:  # configuration changed under a queued job: nothing to run it with
        _fail_all(reports, summary, mod, todo[mod], station, "not_ready")
    for mod in order:
        spec = cat.by_module[mod]
        started = time.perf_counter()
        reason: str | None = None
        norm = None
        try:
            w = windows.windows_for(mod)  # type: ignore[union-attr]
            for dep in spec.deps:
                if dep in fresh:
                    w[dep] = fresh[dep]
            inp = build_input(cat, mod, station, w, now_ms, shared_inputs)
            missing = missing_required(spec, inp["_data_quality"]["available_topics"])
            if missing:
                reason = "upstream_failed" if any(x in not_ok for x in missing) else "not_ready"
            else:
                try:
                    result = call_with_timeout(ctx.algorithms[mod], station, inp, spec.run_timeout_s)
                except AlgorithmTimeout:
                    reason = "timeout"
                except Exception as e:  # noqa: BLE001 - an algorithm's failure is a reported outcome
                    log.warning("station %s module %s: algorithm raised %s: %s", station, mod, type(e).__name__, e)
                    reason = "exception"
                else:
                    for alias in ctx.order_inputs[mod]:  # it received the closed seconds after its cursor
                        seconds = w.get(alias)
                        if seconds:
                            cursors.append((mod, alias, max(s["seq"] for s in seconds)))
                    if result is not None:
                        try:
                            norm = normalise_result(station, result)
                        except UnserialisableResult as e:
                            log.warning("%s", e)
                            reason = "unserialisable"
        except Exception as e:  # noqa: BLE001 - building the input failed: report, keep going
            log.exception("station %s module %s: input could not be built: %s", station, mod, e)
            reason = "exception"
        seconds = time.perf_counter() - started
        if reason is not None:
            outcome = "failed"
        elif norm is None:
            outcome = "none"
        else:
            outcome = "ok"
        if outcome == "ok":
            outputs.append((mod, norm.value))  # type: ignore[union-attr]
            fresh[mod] = {"ts": now_ms, "src": "local", "payload": norm.value}  # type: ignore[union-attr]
            if ctx.result_handler is not None:
                hooks.append((inp, norm.value))  # type: ignore[union-attr]
        else:
            not_ok.add(mod)
        label = outcome if reason is None else f"failed:{reason}"
        counts[f"{mod}:{label}"] += 1
        counts[f"{mod}:us"] += int(seconds * 1e6)
        m.RUNS.inc(module=mod, outcome=label)
        m.ALGORITHM_SECONDS.observe(seconds, module=mod)
        summary.runs.append(RunOutcome(mod, outcome, reason, seconds, todo[mod]))
        for b in todo[mod]:
            reports.append(Report(b, station, outcome, norm.json if norm is not None else None, reason,
                                  norm.nonfinite if norm else 0, bool(norm and norm.mismatch),
                                  bool(norm and norm.wrapped)))

    # everything the job writes, in one round trip and in this order: outputs and cursors,
    # reports (a report may complete a batch), the running marker and the run counters
    sp = ScriptPipeline(ctx.r)
    ctx.writes.queue(sp, station, outputs, cursors, now_ms)
    at = ctx.tracker.queue_reports(sp, reports, int(time.time() * 1000))
    ctx.pending.queue_done(sp.pipe, station, job_id)
    queue_incr_many(sp, ctx.tracker.keys.counters(RUNS_GROUP), counts)
    replies = sp.execute()
    rep = ctx.tracker.reports_done(reports, [replies[i] for i in at], int(time.time() * 1000))
    summary.statuses.update(rep.statuses)
    for inp, value in hooks:
        _hook(ctx.result_handler, station, inp, value)
    if rep.claimed and ctx.uploader is not None:
        if ctx.background_upload:
            ctx.uploader.submit(rep.claimed)
            summary.queued = [b.batch_id for b in rep.claimed]
        else:
            ok = ctx.uploader.upload(rep.claimed)
            summary.uploaded = [b.batch_id for b, good in zip(rep.claimed, ok, strict=True) if good]
    for bid in rep.skipped:
        m.BATCHES.inc(module=module_of(bid), outcome="skipped")
    m.JOBS.inc(outcome="ok")
    m.JOB_SECONDS.observe(time.perf_counter() - t0)
    return summary


def _fail_all(reports: list[Report], summary: JobSummary, mod: str, batches: list[str], station: str,
              reason: str) -> None:
    summary.runs.append(RunOutcome(mod, "failed", reason, 0.0, batches))
    m.RUNS.inc(module=mod, outcome=f"failed:{reason}")
    for b in batches:
        reports.append(Report(b, station, "failed", None, reason))


def _hook(fn: Any, station: str, inp: Any, result: Any) -> None:
    try:
        fn(station, inp, result)
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
        m.RUNS.inc(module=mod, outcome="failed:exception")
    rep = ctx.tracker.report(reports, int(time.time() * 1000))
    if rep.claimed and ctx.uploader is not None:
        if ctx.background_upload:
            ctx.uploader.submit(rep.claimed)
        else:
            ctx.uploader.upload(rep.claimed)
    m.JOBS.inc(outcome="failed")


__all__ = ["run_station", "execute", "on_job_failure", "call_with_timeout", "AlgorithmTimeout", "observe_batch"]
