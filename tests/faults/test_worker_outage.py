"""Scenario 8: a rolling worker outage. Every worker is stopped mid-stream for 30 s and, later,
for 120 s (scaled, never below 12 s: longer than the batch timeout and than the job TTL that
used to drop queued jobs), while the ingester keeps ingesting; then they are started again.

At each restart: every station with pending runs still has its job waiting (nothing dropped by
waiting). After it: every pending run ran (0 runs lost), every batch created after the restart
until the next outage is complete (all its expected stations reported by its deadline: a run whose batch closed
during the outage reports to the next message's batch instead of swallowing its trigger),
0 duplicate uploads, and in the end no pending or running marker is left.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from harness import (
    Proc,
    Sender,
    audit_batches,
    figures,
    ingester,
    now_ms,
    read_batches,
    scale,
    scaled,
    scenario,
    wait_batches_finished,
    wait_caught_up,
    worker,
)
from operations import created_since, incomplete, jobs_not_waiting, markers_left, pending_runs, start_paced
from slow_algorithms import env as slow_env
from slow_algorithms import modules_config, read_calls

from stationflow.local import wait_for
from stationflow.traffic import Traffic

pytestmark = [pytest.mark.faults, pytest.mark.heavy(75)]

WORKERS = 2
STEADY_S = 8.0


def stop_all(procs: list[Proc], timeout_s: float = 10.0) -> None:
    """SIGTERM every worker at once (a rolling deploy's stop), SIGKILL what is left after
    `timeout_s`."""
    for p in procs:
        p.signal(signal.SIGTERM)
    for p in procs:
        p.stop(timeout_s)


def due_since(r: Any, since_ms: int) -> bool:
    """A batch created at or after `since_ms` has reached its deadline."""
    now = now_ms()
    return any(int(h["deadline"]) < now for h in created_since(read_batches(r, "wo"), since_ms).values())


def workers_up(r: Any, procs: list[Proc]) -> bool:
    """Every worker process has registered with RQ (it is taking jobs)."""
    pids = set()
    for k in r.scan_iter("rq:worker:*"):
        if r.type(k) == b"hash":
            pid = r.hget(k, "pid")
            if pid:
                pids.add(int(pid))
    return all(p.pid in pids for p in procs)


def test_rolling_worker_outage_loses_no_run_and_no_upload(kafka_bootstrap: str, private_redis: Any,
                                                          tmp_path: Path) -> None:
    sc = scenario(kafka_bootstrap, private_redis.url, tmp_path, prefix="wo", group="g-outage",
                  extra={"modules": modules_config()})
    cat, cfg = sc.cat, sc.cfg
    outages = [max(12.0, 30.0 * scale()), max(12.0, 120.0 * scale())]
    total_s = STEADY_S * (len(outages) + 1) + sum(outages)
    n_messages = scaled(12_000, 2_000)
    delay, calls = tmp_path / "delay_s", tmp_path / "calls"
    delay.write_text("0")
    env = slow_env(delay, calls_file=calls)
    messages = Traffic(stations=30, seed=8, start_ms=now_ms(), catalogue=cat).take(n_messages)

    ing = ingester(tmp_path, cfg, "wo-ingest").start()
    workers = [worker(tmp_path, cfg, f"wo-worker-{i}", env=env).start() for i in range(WORKERS)]
    sender = Sender(kafka_bootstrap, cat)
    stop_feeding = threading.Event()
    feeder, produced = start_paced(sender, messages, total_s + 30.0, stop_feeding)
    r = private_redis.client()
    restarts: list[dict[str, Any]] = []
    try:
        time.sleep(STEADY_S)
        for outage_s in outages:
            if restarts:
                restarts[-1]["until"] = now_ms()  # batches of the next outage expire: not counted
            stop_all(workers)
            time.sleep(outage_s)
            runs, jobs = pending_runs(r, "wo")
            dropped = jobs_not_waiting(r, jobs)
            for w in workers:
                w.start()
            wait_for(lambda: workers_up(r, workers), 60, "the workers to be back")
            restarts.append({"at": now_ms(), "outage_s": outage_s, "pending": runs, "jobs_dropped": dropped})
            time.sleep(STEADY_S)
            # on a loaded machine the first batches after the restart may still be open: the next
            # outage waits until one of them is due, so each restart has batches to judge
            wait_for(lambda at=restarts[-1]["at"]: due_since(r, at), 120, "a batch created after the restart to be due")
        stop_feeding.set()
        feeder.join(300)
        assert produced
        wait_caught_up(kafka_bootstrap, "g-outage", produced, 300, procs=[ing])
        batches = wait_batches_finished(r, "wo", 240)
        audit = audit_batches(r, "wo", kafka_bootstrap, cat, batches)
        left = markers_left(r, "wo")
        for p in (ing, *workers):
            assert p.alive(), p.log()
    finally:
        for p in (ing, *workers):
            p.stop(15)
        sender.close()

    ran = read_calls(calls)
    per_outage = []
    for rs in restarts:
        since = {(s, m) for m, s, ms in ran if ms >= rs["at"]}
        not_run = [k for k, b in rs["pending"].items()
                   if k not in since and batches.get(b, {}).get(f"e:{k[0]}", "-") == "-"]
        # batches due before the next outage (those due after it expire with the workers down)
        after = {b: h for b, h in created_since(batches, rs["at"]).items()
                 if int(h["deadline"]) < rs.get("until", 2**62)}
        per_outage.append({"outage_s": rs["outage_s"], "pending_runs_at_restart": len(rs["pending"]),
                           "jobs_dropped": len(rs["jobs_dropped"]), "runs_lost": len(not_run),
                           "batches_due_before_next_outage": len(after),
                           "batches_incomplete": len(incomplete(after)),
                           "_not_run": not_run[:5], "_incomplete": incomplete(after)[:5]})
    lost_reports = sum(int(h.get("f:lost", 0) or 0) for h in batches.values())
    requeued = sum(w.log(10**8).count("dequeued by a worker that stopped") for w in workers)
    figures("worker_outage", messages=len(produced), workers=WORKERS,
            outages=[{k: v for k, v in o.items() if not k.startswith("_")} for o in per_outage],
            runs_reported_lost=lost_reports, markers_left=left, jobs_requeued_after_a_stop=requeued, losses=sum(o["runs_lost"] for o in per_outage),
            duplicates=audit.duplicates, dead_letters=0, **audit.as_figures())
    for o in per_outage:
        assert o["pending_runs_at_restart"] > 0, "the outage left nothing pending: it tested nothing"
        assert o["jobs_dropped"] == 0, o
        assert o["runs_lost"] == 0, o
        assert o["batches_due_before_next_outage"] > 0
        assert o["batches_incomplete"] == 0, o
    assert lost_reports == 0 and left == 0
    assert audit.unfinished == [] and audit.missing == [] and audit.unexpected == []
    assert audit.duplicates == 0 and audit.problems == [], audit.problems[:5]
