"""The sweep: expire batches past their deadline, re-send stale uploads, report lost runs.

Every worker process runs it on a small daemon thread (`SweeperThread`) and `--burst` runs
it before and after draining. Any number of sweepers may run at once: each batch's move is
decided by the tracker's script (one winner), and each lost running marker is taken by
exactly one reclaim script.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from parsers.batches import module_of
from store.tracker import BatchTracker, Report
from workers import context as wctx
from workers import events, heartbeat
from workers.scheduling import release_deferred
from workers.stuck import requeue_stuck
from workers.upload import Uploader, observe_batch

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    claimed: int = 0  # expired batches this sweep moved to uploading
    reclaimed: int = 0  # stale uploads taken over
    uploaded: int = 0
    skipped: int = 0  # expired without an ok result
    requeued: int = 0  # jobs a stopped worker dequeued and never started (workers.stuck)
    upload_failed: int = 0
    lost_runs: int = 0
    released: int = 0  # deferred runs (rate control) whose interval passed, now pending

    def __bool__(self) -> bool:
        return any((self.claimed, self.reclaimed, self.uploaded, self.skipped, self.upload_failed, self.lost_runs,
                    self.released, self.requeued))


def sweep(ctx: wctx.WorkerContext, now_ms: int | None = None, limit: int = 200,
          tracker: BatchTracker | None = None) -> SweepResult:
    """One pass. `tracker` lets a sweeper thread use its own tracker (its tallies are not
    shared with the jobs of the same process)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    tracker = tracker or ctx.tracker
    out = SweepResult()

    # runs of jobs that died: report them lost (may complete their batches)
    lost = ctx.pending.reclaim_lost(now_ms - int(ctx.lost_after_s * 1000), limit)
    reports = [Report(b, station, "failed", None, "lost")
               for (station, _job), runs in lost.items() for bs in runs.values() for b in bs]
    for runs in lost.values():
        for mod in runs:
            events.count("runs", module=mod, outcome="failed:lost")
    out.lost_runs = len(reports)
    claimed = []
    if reports:
        rep = tracker.report(reports, now_ms)
        claimed.extend(rep.claimed)
        out.skipped += len(rep.skipped)

    due = tracker.claim_due(now_ms, limit)
    claimed.extend(due.claimed)
    out.skipped += len(due.skipped)
    for b in due.claimed:
        if b.status == "claimed":
            out.claimed += 1
        else:
            out.reclaimed += 1
    for bid in due.skipped:
        events.count("batches", module=module_of(bid), outcome="skipped")
    if claimed:
        uploader = ctx.uploader if ctx.uploader is not None and ctx.uploader.tracker is tracker \
            else Uploader(ctx.catalogue, tracker, producer=ctx.uploader.producer if ctx.uploader else None)
        ok = uploader.upload(claimed, now_ms)
        out.uploaded = sum(ok)
        out.upload_failed = len(ok) - out.uploaded
        for b in claimed:
            if b.status == "claimed":
                events.count("batches", module=b.module, outcome="expired")
    out.requeued = len(requeue_stuck(ctx.r, ctx.queue, now_ms / 1000))
    _heartbeat(ctx, now_ms)
    out.released = _release(ctx, now_ms)
    return out


def _release(ctx: wctx.WorkerContext, now_ms: int) -> int:
    """Rate control: start the deferred runs whose interval has passed (scheduling)."""
    rel = release_deferred(ctx.r, ctx.catalogue, ctx.schedule_options, now_ms=now_ms, pending=ctx.pending)
    for module, n in rel.released.items():
        events.count("runs_released", n, module=module)
    return sum(rel.released.values())


def _heartbeat(ctx: wctx.WorkerContext, now_ms: int) -> None:
    """Tick heartbeat modules (spec §6.5); a no-op unless some module sets heartbeat_s."""
    if not heartbeat.heartbeat_modules(ctx.catalogue):
        return
    heartbeat.tick(ctx.r, ctx.catalogue, now_ms / 1000, ctx.schedule_options, store=ctx.store)


def wait_for_deferred(ctx: wctx.WorkerContext, max_wait_s: float = 3600.0) -> bool:
    """Sleep until the earliest deferred run (rate control) may start; False when none waits.
    `--burst` uses it so that a drained queue also means every trailing run has run."""
    due = ctx.pending.next_deferred()
    if due is None:
        return False
    time.sleep(min(max_wait_s, max(0.0, due / 1000 - time.time())))
    return True


class SweeperThread(threading.Thread):
    """Calls `sweep` every `interval_s` until stopped; errors are logged and retried."""

    def __init__(self, ctx: wctx.WorkerContext, interval_s: float | None = None) -> None:
        super().__init__(name="stationflow-sweeper", daemon=True)
        self.ctx = ctx
        self.interval_s = interval_s if interval_s is not None else ctx.sweep_interval_s
        self.tracker = BatchTracker(ctx.r, ctx.prefix, keep_s=ctx.batch_keep_s)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval_s):
            try:
                while sweep(self.ctx, tracker=self.tracker):
                    if self._halt.is_set():
                        break
            except Exception as e:  # noqa: BLE001 - Redis/Kafka hiccup: try again next tick
                log.warning("sweep failed: %s", e)

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        self.join(timeout)


__all__ = ["sweep", "SweepResult", "SweeperThread", "observe_batch", "wait_for_deferred"]
