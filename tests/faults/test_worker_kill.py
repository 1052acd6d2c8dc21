"""Scenario 2: a worker is SIGKILLed at random moments while it runs station jobs.

Every batch the tracker created ends uploaded or skipped; every uploaded batch is on its
module's output topic exactly once (counted by batch id, the Kafka key), complete or, when a
station's run died with the worker, partial after its deadline; no uploaded batch is missing
and nothing is uploaded that the tracker did not create.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from harness import (
    Sender,
    audit_batches,
    figures,
    ingester,
    scaled,
    scenario,
    wait_batches_finished,
    wait_caught_up,
    worker,
)
from slow_algorithms import env as slow_env
from slow_algorithms import modules_config

from stationflow.traffic import Traffic

pytestmark = [pytest.mark.faults, pytest.mark.heavy(24)]


def paced_send(sender: Sender, messages: list[Any], seconds: float, out: list[Any]) -> None:
    """Spread the messages over `seconds` so jobs keep arriving while workers die."""
    t0 = time.monotonic()
    for i, m in enumerate(messages):
        sender.send(m.topic, m.value, m.timestamp_ms)
        due = t0 + seconds * (i + 1) / len(messages)
        if i % 200 == 0:
            sender.producer.flush()
            time.sleep(max(0.0, due - time.monotonic()))
    out.extend(sender.results())


def wait_busy(r: Any, pid: int, timeout_s: float) -> bool:
    """Wait until the worker process `pid` is running a job (RQ's worker hash says busy)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for k in r.scan_iter("rq:worker:*"):
            if r.type(k) == b"hash" and r.hget(k, "pid") == str(pid).encode() and r.hget(k, "state") == b"busy":
                return True
        time.sleep(0.01)
    return False


def test_sigkilled_worker_every_batch_uploaded_once(kafka_bootstrap: str, private_redis: Any,
                                                    tmp_path: Path) -> None:
    sc = scenario(kafka_bootstrap, private_redis.url, tmp_path, prefix="w2", group="g-worker",
                  extra={"modules": modules_config()})
    cat, cfg = sc.cat, sc.cfg
    n_messages, n_kills = scaled(10_000, 500), scaled(5, 2)
    rng = random.Random(2)
    delay = tmp_path / "delay_s"
    delay.write_text("0.05")  # every module run sleeps: a kill lands in a job most of the time
    slow = slow_env(delay)
    messages = Traffic(stations=50, seed=2, start_ms=int(time.time() * 1000), catalogue=cat).take(n_messages)

    ing = ingester(tmp_path, cfg, "ingest").start()
    steady = worker(tmp_path, cfg, "worker-steady", env=slow).start()
    victim = worker(tmp_path, cfg, "worker-victim", env=slow).start()
    sender = Sender(kafka_bootstrap, cat)
    produced: list[Any] = []
    feeder = threading.Thread(target=paced_send, args=(sender, messages, 4.0 * n_kills, produced), daemon=True)
    feeder.start()
    r = private_redis.client()
    kills = kills_mid_job = 0
    try:
        for _ in range(n_kills):
            time.sleep(rng.uniform(1.5, 4.0))
            busy = wait_busy(r, victim.pid, 3.0)
            victim.kill()
            kills += 1
            kills_mid_job += busy
            time.sleep(rng.uniform(0.1, 1.0))
            victim.start()
        feeder.join(300)
        assert len(produced) == n_messages
        wait_caught_up(kafka_bootstrap, "g-worker", produced, 300, procs=[ing])
        batches = wait_batches_finished(r, "w2", 180)
        audit = audit_batches(r, "w2", kafka_bootstrap, cat, batches)
        for p in (ing, steady, victim):
            assert p.alive(), p.log()
    finally:
        for p in (ing, steady, victim):
            p.stop(10)
        sender.close()

    figures("worker_sigkill", messages=n_messages, kills=kills, kills_while_a_worker_was_busy=kills_mid_job,
            restarts=victim.starts - 1, losses=len(audit.missing) + len(audit.unfinished),
            duplicates=audit.duplicates, dead_letters=0, **audit.as_figures())
    assert kills == n_kills
    assert audit.created > 0 and audit.uploaded > 0
    assert audit.unfinished == [], f"{len(audit.unfinished)} batches never finished: {audit.unfinished[:5]}"
    assert audit.missing == [], f"uploaded but not on the topic: {audit.missing[:5]}"
    assert audit.unexpected == [], f"on the topic without a batch: {audit.unexpected[:5]}"
    assert audit.problems == [], audit.problems[:5]
    # a duplicate is only allowed for a batch whose sender died mid-send (spec §6.6)
    assert audit.duplicates == audit.duplicates_after_reclaim
