"""The pending runs of several stations in one RQ job ("station group job").

RQ's own work per job (dequeue, start, heartbeat, finish: ~2 ms of worker CPU on the
reference machine) would be most of a station job's cost, so the scheduler puts the stations
of a poll that need a job into groups (`ScheduleOptions.group_size`) and a worker runs a
group in one job. Every per-station contract is kept:

- each station's pending runs are taken atomically into `sf:{S}:running:<job id>` (one take
  script per station, all in one round trip with the replay checks of the batches the job
  was enqueued for), so each (station, module) pending run runs once, on the windows read
  after the take (one more round trip for every station of the group);
- within a station, a module starts when its dependencies in the job have ended and gets
  their results in memory; modules of different names run side by side, each on its own
  lane (`workers.lanes`); the calls of one module at the stations of a group run one after
  another (never two calls of one module at once in a process, as with one station a job);
- a run is reported and stored at most `write_linger_s` after it ended, whatever the other
  runs of the group do: results that end together share one write round trip (outputs and
  cursors, reports, their removal from the running markers, counters), and a slow module
  never holds back the reports of the runs that ended before it. The linger is where
  per-module reporting and the cost per run pull against each other: 0 writes each wave at
  once (more, smaller writes), a few tens of ms lets a group's fast runs share one write;
- a job that dies midway has stored and reported the runs that ended (written) and removed
  them from their running markers; its retry (same job id) or the sweeper settles the rest.
"""

from __future__ import annotations

import logging
import math
import queue
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from parsers.batches import module_of
from parsers.inputs import build_input
from store.counters import queue_incr_many
from store.scripts import ScriptPipeline
from store.tracker import Normalised, Report
from workers import context as wctx
from workers import events, lanes, runs
from workers.lanes import call_hook

log = logging.getLogger("workers.jobs")

RUNS_GROUP = "runs"
#: the longest an ended run waits for other runs of its group to share its write
WRITE_LINGER_S = 0.05


def take_group(ctx: wctx.WorkerContext, job_id: str, now_ms: int, hints: Mapping[str, Sequence[str]]
               ) -> dict[str, dict[str, list[str]] | None]:
    """Take the pending runs of every station of `hints` (station -> the batches the job was
    enqueued for) in one round trip with those batches' replay checks; per station, module ->
    the batches still to report to (a run every batch of which already holds the station's
    report is a replay, left out), or None when there was nothing to take."""
    batch_key = ctx.tracker.keys.batch
    sp = ScriptPipeline(ctx.r)
    at: dict[str, tuple[int, int, list[str]]] = {}
    for station, hint in hints.items():
        where = ctx.pending.queue_take(sp, station, job_id, now_ms)
        hinted = list(dict.fromkeys(hint))
        first = len(sp)
        for b in hinted:
            sp.pipe.hget(batch_key(b), f"e:{station}")
        at[station] = (where, first, hinted)
    replies = sp.execute()
    taken: dict[str, dict[str, list[str]]] = {}
    state: dict[tuple[str, str], Any] = {}
    for station, (where, first, hinted) in at.items():
        taken[station] = ctx.pending.took(station, job_id, replies[where])
        state.update(((b, station), v) for b, v in zip(hinted, replies[first:first + len(hinted)], strict=True))
    unknown = [(b, s) for s, t in taken.items() for bs in t.values() for b in bs if (b, s) not in state]
    if unknown:
        pipe = ctx.r.pipeline(transaction=False)
        for b, s in unknown:
            pipe.hget(batch_key(b), f"e:{s}")
        state.update(zip(unknown, pipe.execute(), strict=True))
    out: dict[str, dict[str, list[str]] | None] = {}
    for station, t in taken.items():
        if not t:
            out[station] = None
            continue
        out[station] = {mod: [b for b in bs if state[(b, station)] in (None, b"-", "-")] for mod, bs in t.items()}
    return out


@dataclass
class Ended:
    station: str
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


@dataclass
class Outcome:
    """One run as the job summary lists it."""

    station: str
    module: str
    outcome: str  # ok | none | failed
    reason: str | None
    seconds: float
    batches: list[str]


class GroupRun:
    """The runs of one job: `todo` station -> module -> batches (empty: every run was a
    replay), `windows` station -> its `StationWindows`. Modules start as soon as their
    dependencies in their station have ended and their lane is free; ended runs are written
    and reported within `linger_s`."""

    def __init__(self, ctx: wctx.WorkerContext, job_id: str, todo: Mapping[str, Mapping[str, list[str]]],
                 windows: Mapping[str, Any], now_ms: int, t0: float, linger_s: float = WRITE_LINGER_S) -> None:
        self.ctx, self.job_id, self.todo, self.windows = ctx, job_id, todo, windows
        self.now_ms, self.t0, self.linger_s = now_ms, t0, linger_s
        cat = ctx.catalogue
        self.fresh: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in todo}  # in-job outputs for dependents
        self.not_ok: dict[str, set[str]] = {s: set() for s in todo}
        self.left: dict[str, int] = {s: len(mods) for s, mods in todo.items()}  # runs not yet ended
        self.closed: set[str] = set()  # stations whose running marker went with a write
        self.unmet: dict[tuple[str, str], int] = {}
        self.dependents: dict[tuple[str, str], list[str]] = {}
        self.ready: dict[str, deque[str]] = {m: deque() for m in cat.sort_modules(cat.by_module)}
        self.busy: set[str] = set()  # modules with a call running (one at a time per module)
        self.running: dict[tuple[str, str], _Running] = {}
        self.unwritten: list[Ended] = []
        self.first_unwritten = math.inf  # perf_counter of the oldest unwritten end
        self.counts: Counter[str] = Counter()
        self.shared: dict[str, dict[str, Any]] = {s: {} for s in todo}  # build_input's per-station reuse
        self.done: queue.SimpleQueue[lanes.Call] = queue.SimpleQueue()
        self.outcomes: list[Outcome] = []
        self.writes = 0
        self.statuses: Counter[str] = Counter()
        self.uploaded: list[str] = []
        self.queued: list[str] = []

    def run(self) -> None:
        cat = self.ctx.catalogue
        for station, mods in self.todo.items():
            runnable = [m for m in mods if m in cat.by_module and cat.by_module[m].runs == "local"]
            in_job = set(runnable)
            for mod in cat.sort_modules(runnable):
                deps = [d for d in cat.by_module[mod].deps if d in in_job]
                self.unmet[(station, mod)] = len(deps)
                for d in deps:
                    self.dependents.setdefault((station, d), []).append(mod)
                if not deps:
                    self.ready[mod].append(station)
            for mod in mods:
                if mod not in in_job:  # configuration changed under a queued job: nothing to run it with
                    self.end(station, mod, time.perf_counter(), reason="not_ready")
        while True:
            self.start_ready()
            if not self.running:
                break
            if self.unwritten and time.perf_counter() >= self.first_unwritten + self.linger_s:
                self.write(final=False)
            self.wait()
        self.write(final=True)

    def start_ready(self) -> None:
        """Start every run whose dependencies have ended on its module's lane, if free (a run
        that ends at once, not ready, may make others ready: loop until nothing starts)."""
        progress = True
        while progress:
            progress = False
            for mod, stations in self.ready.items():
                while stations and mod not in self.busy:
                    self.start(stations.popleft(), mod)
                    progress = True

    def start(self, station: str, mod: str) -> None:
        ctx = self.ctx
        spec = ctx.catalogue.by_module[mod]
        started = time.perf_counter()
        try:
            w = self.windows[station].windows_for(mod)
            fresh = self.fresh[station]
            for dep in spec.deps:
                if dep in fresh:
                    w[dep] = fresh[dep]
            start_ms = self.now_ms + int((started - self.t0) * 1000)
            inp = build_input(ctx.catalogue, mod, station, w, start_ms, self.shared[station])
            not_ready = runs.check_ready(spec, inp, self.not_ok[station])
        except Exception as e:  # noqa: BLE001 - building the input failed: report, keep going
            log.exception("station %s module %s: input could not be built: %s", station, mod, e)
            self.end(station, mod, started, reason="exception")
            return
        if not_ready is not None:
            self.end(station, mod, started, reason=not_ready.reason)
            return
        call = lanes.submit(lanes.Call(ctx.algorithms[mod], (station, inp), self.done, tag=(station, mod)))
        timeout = spec.run_timeout_s
        self.busy.add(mod)
        self.running[(station, mod)] = _Running(call, inp, w, started,
                                                started + timeout if timeout and timeout > 0 else math.inf)

    def wait(self) -> None:
        """Wait for the next run to end (or the nearest run timeout, or the write linger of
        the oldest ended run), then take every run that has ended by now."""
        due = min(min(r.deadline for r in self.running.values()), self.first_unwritten + self.linger_s)
        timeout = None if due == math.inf else max(0.0, due - time.perf_counter())
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
        for (station, mod), r in list(self.running.items()):
            if r.deadline <= now:
                del self.running[(station, mod)]
                self.busy.discard(mod)
                lanes.abandon(r.call)
                timed_out = lanes.AlgorithmTimeout(f"no result after {r.deadline - r.started:g} s")
                run = runs.classify_error(station, mod, timed_out)
                self.end(station, mod, r.started, reason=run.reason, inp=r.inp)

    def collect(self, call: lanes.Call) -> None:
        station, mod = call.tag
        r = self.running.get((station, mod))
        if r is None or r.call is not call:
            return  # a call that timed out earlier: its lane was abandoned
        del self.running[(station, mod)]
        self.busy.discard(mod)
        lanes.release(call)
        if call.error is not None:
            if not isinstance(call.error, Exception):
                raise call.error
            run = runs.classify_error(station, mod, call.error)
            self.end(station, mod, r.started, reason=run.reason, inp=r.inp)
            return
        cursors = []
        for alias in self.ctx.order_inputs[mod]:  # it received the closed seconds after its cursor
            seconds = r.windows.get(alias)
            if seconds:
                cursors.append((mod, alias, max(s["seq"] for s in seconds)))
        run = runs.classify_value(station, call.value)
        self.end(station, mod, r.started, reason=run.reason, norm=run.result, inp=r.inp, cursors=cursors)

    def end(self, station: str, mod: str, started: float, *, reason: str | None = None,
            norm: Normalised | None = None, inp: Any = None, cursors: list[tuple[str, str, int]] | None = None) -> None:
        now = time.perf_counter()
        seconds = now - started
        outcome = "failed" if reason is not None else "none" if norm is None else "ok"
        if outcome == "ok":
            self.fresh[station][mod] = {"ts": self.now_ms, "src": "local", "payload": norm.value}  # type: ignore[union-attr]
        else:
            self.not_ok[station].add(mod)
        self.left[station] -= 1
        for dep in self.dependents.get((station, mod), ()):
            self.unmet[(station, dep)] -= 1
            if self.unmet[(station, dep)] == 0:
                self.ready[dep].append(station)
        label = outcome if reason is None else f"failed:{reason}"
        self.counts[f"{mod}:{label}"] += 1
        self.counts[f"{mod}:us"] += int(seconds * 1e6)
        events.count("runs", module=mod, outcome=label)
        events.sample("algorithm_seconds", seconds, module=mod)
        if norm is not None:
            events.count_fixups(mod, norm.nonfinite, norm.mismatch, norm.wrapped)
        self.outcomes.append(Outcome(station, mod, outcome, reason, seconds, self.todo[station][mod]))
        # the input is kept for the result hook only: a group's ended inputs (hourly grids) kept
        # alive until their write cost more in garbage collector passes than they took to build
        keep = inp if self.ctx.result_handler is not None else None
        self.unwritten.append(Ended(station, mod, outcome, reason, norm if outcome == "ok" else None, keep,
                                    cursors or []))
        self.first_unwritten = min(self.first_unwritten, now)

    def write(self, final: bool) -> None:
        """One round trip with what the ended runs produced, in this order: outputs and
        cursors, reports (a report may complete a batch), their removal from the running
        markers (a station's marker itself once every run of it has ended; with `final`, every
        marker left) and the run counters."""
        ctx, ended = self.ctx, self.unwritten
        self.unwritten, self.first_unwritten = [], math.inf
        if not ended and (not final or self.closed.issuperset(self.todo)):
            return
        by_station: dict[str, list[Ended]] = {}
        for e in ended:
            by_station.setdefault(e.station, []).append(e)
        sp = ScriptPipeline(ctx.r)
        for station, es in by_station.items():
            outputs = [(e.module, e.norm.value) for e in es if e.norm is not None]
            ctx.writes.queue(sp, station, outputs, [c for e in es for c in e.cursors], self.now_ms)
        reports = [_report(b, e) for e in ended for b in self.todo[e.station][e.module]]
        at = ctx.tracker.queue_reports(sp, reports, int(time.time() * 1000))
        for station in self.todo:
            if station in self.closed:
                continue
            if final or self.left[station] == 0:
                ctx.pending.queue_done(sp.pipe, station, self.job_id)
                self.closed.add(station)
            elif station in by_station:
                ctx.pending.queue_forget(sp.pipe, station, self.job_id, [e.module for e in by_station[station]])
        queue_incr_many(sp, ctx.tracker.keys.counters(RUNS_GROUP), self.counts)
        self.counts = Counter()
        replies = sp.execute()
        self.writes += 1
        rep = ctx.tracker.reports_done(reports, [replies[i] for i in at], int(time.time() * 1000))
        self.statuses.update(rep.statuses)
        if ctx.result_handler is not None:
            for e in ended:
                if e.norm is not None:
                    _hook(ctx.result_handler, e.station, e.inp, e.norm.value)
        self._hand_over(rep)

    def _hand_over(self, rep: Any) -> None:
        """Upload the batches the reports completed (or queue them for the upload thread) and
        count the ones skipped."""
        ctx = self.ctx
        if rep.claimed and ctx.uploader is not None:
            if ctx.background_upload:
                ctx.uploader.submit(rep.claimed)
                self.queued += [b.batch_id for b in rep.claimed]
            else:
                ok = ctx.uploader.upload(rep.claimed)
                self.uploaded += [b.batch_id for b, good in zip(rep.claimed, ok, strict=True) if good]
        for bid in rep.skipped:
            events.count("batches", module=module_of(bid), outcome="skipped")


def _report(batch: str, e: Ended) -> Report:
    """The report of one ended run to one of its batches."""
    n = e.norm
    if n is None:
        return Report(batch, e.station, e.outcome, None, e.reason)
    return Report(batch, e.station, e.outcome, n.json, e.reason, n.nonfinite, bool(n.mismatch), bool(n.wrapped))


def _hook(fn: Any, station: str, inp: Any, result: Any) -> None:
    try:
        call_hook(fn, station, inp, result)
    except Exception:  # noqa: BLE001 - a hook never fails a run
        log.exception("result_handler failed for station %s", station)
