"""Scenario 6: slow workers. Algorithms that sleep (configured by dotted path, see
slow_algorithms.py) make the station-job queue grow; the ingester pauses fetching when the
queue passes `queue.high_water` (counted in `pauses`), stops consuming while paused, Redis
memory stays bounded, and once the workers speed up everything catches up: the group
commits every offset, every batch finishes, every window equals the model.
"""

from __future__ import annotations

import threading
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from harness import (
    Sender,
    figures,
    in_offset_order,
    ingester,
    order_counts,
    scaled,
    scenario,
    wait_batches_finished,
    wait_caught_up,
    wait_orders_closed,
    window_differences,
    worker,
)
from model import Model
from slow_algorithms import env as slow_env
from slow_algorithms import modules_config

from stationflow.local import wait_for
from stationflow.traffic import Traffic
from store.windows import WindowStore

pytestmark = [pytest.mark.faults, pytest.mark.heavy(43)]

HIGH, LOW = 20, 10
STATIONS = 200
POLL = 20  # max_poll_records: after the start-up fan-out each record adds at most one job


def ingested_while_paused(samples: list[tuple[float, int, int, tuple[int, int, int]]]
                          ) -> tuple[float, dict[int, int]]:
    """Seconds seen paused, and messages counted during each pause (keyed by its pause number).

    Only spans between two samples that both show the same pause (pauses > resumes, neither
    changed) count: what a span that holds a resume ingested is allowed, and the queue depth
    sampled here is no guide, since the ingester reads it at its own moments."""
    seconds, ingested = 0.0, {}
    for (t0, _, _, (m0, p0, r0)), (t1, _, _, (m1, p1, r1)) in pairwise(samples):
        if p0 > r0 and (p0, r0) == (p1, r1):
            seconds += t1 - t0
            ingested[p0] = ingested.get(p0, 0) + m1 - m0
    return seconds, ingested


def test_slow_workers_backpressure_then_catch_up(kafka_bootstrap: str, private_redis: Any, tmp_path: Path) -> None:
    sc = scenario(kafka_bootstrap, private_redis.url, tmp_path, prefix="sw", group="g-slow", extra={
        "modules": modules_config(), "queue": {"high_water": HIGH, "low_water": LOW},
        "kafka": {"consumer": {"max_poll_records": POLL}}})
    cat, cfg, settings = sc.cat, sc.cfg, sc.settings
    n_messages = scaled(8_000, 1500)
    delay = tmp_path / "delay_s"
    delay.write_text("0")
    start = int(time.time() * 1000)
    messages = Traffic(stations=STATIONS, seed=6, start_ms=start, catalogue=cat).take(n_messages)
    # the start-up pushes (param, realtime history, price, weather, calendar) fan out to every
    # station at once; they go first, with fast workers, so the slow phase sees steady traffic
    startup = [m for m in messages if m.timestamp_ms == start and m.topic != cat.by_alias["car_order"].topic]
    steady = [m for m in messages if m not in startup]

    r = private_redis.client()
    ing = ingester(tmp_path, cfg, "sw-ingest").start()
    wrk = worker(tmp_path, cfg, "sw-worker", env=slow_env(delay)).start()
    sender = Sender(kafka_bootstrap, cat)
    for m in startup:
        sender.send(m.topic, m.value, m.timestamp_ms)
    produced = sender.results()
    wait_caught_up(kafka_bootstrap, "g-slow", produced, 300, procs=[ing, wrk])
    wait_for(lambda: r.llen("rq:queue:stationflow") == 0, 300, "the start-up jobs to drain")
    pauses_before = int(r.hget("sw:counters:ingest", "pauses") or 0)
    delay.write_text("0.2")
    slow_from = time.monotonic()
    for m in steady:
        sender.send(m.topic, m.value, m.timestamp_ms)
    produced += sender.results()
    sender.close()
    # (t, queue depth, redis used_memory, (messages, pauses, resumes)); the counters come from one
    # HMGET and the ingester flushes them in one MULTI, so the three agree with each other
    samples: list[tuple[float, int, int, tuple[int, int, int]]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                mem = int(r.info("memory")["used_memory"])
                counts = r.hmget("sw:counters:ingest", "messages", "pauses", "resumes")
                samples.append((time.monotonic(), int(r.llen("rq:queue:stationflow")), mem,
                                tuple(int(c or 0) for c in counts)))  # type: ignore[misc]
            except Exception:  # noqa: BLE001 - a sample lost to a busy server is just skipped
                pass
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        # slow phase: the queue passes high water and ingestion pauses
        wait_for(lambda: int(r.hget("sw:counters:ingest", "pauses") or 0) > pauses_before, 120,
                 "a backpressure pause", interval=0.2)
        time.sleep(5.0)
        depth_now = int(r.llen("rq:queue:stationflow"))
        slow_phase = [x for x in samples if x[0] >= slow_from]
        paused_s, while_paused = ingested_while_paused(slow_phase)
        # the workers speed up: everything catches up
        delay.write_text("0")
        extra = worker(tmp_path, cfg, "sw-worker-2", env=slow_env(delay)).start()
        wait_caught_up(kafka_bootstrap, "g-slow", produced, 600, procs=[ing, wrk])
        store = WindowStore(r, settings.catalogue, "sw")
        model = Model(settings.catalogue).add_all(in_offset_order(produced))
        wait_orders_closed(store, model, 20)
        batches = wait_batches_finished(r, "sw", 300)
        assert ing.alive() and wrk.alive() and extra.alive(), ing.log() + wrk.log()
    finally:
        stop.set()
        sampler.join(5)
        ing.stop(15)
        wrk.stop(15)
        if "extra" in locals():
            extra.stop(15)

    problems, differing = window_differences(store, model)
    lost, dup = order_counts(store, model)
    pauses = int(r.hget("sw:counters:ingest", "pauses") or 0)
    max_depth = max(s[1] for s in slow_phase)
    mem_slow = max(s[2] for s in slow_phase)
    mem_end = max(s[2] for s in samples)
    unfinished = [b for b, h in batches.items() if h.get("state") not in ("uploaded", "skipped")]
    figures("slow_workers", messages=n_messages, kills=0, losses=lost, duplicates=dup, dead_letters=len(model.dead),
            pauses=pauses, high_water=HIGH, max_queue_depth_slow=max_depth, depth_while_paused=depth_now,
            seconds_seen_paused=round(paused_s, 1), messages_ingested_while_paused=sum(while_paused.values()), redis_used_memory_max_slow=mem_slow,
            redis_used_memory_max=mem_end, windows_differing=differing, batches=len(batches),
            batches_unfinished=len(unfinished))
    assert pauses > pauses_before
    # paused means paused: at most the poll in flight when the gate closed is applied after it
    assert paused_s >= 1.0, f"the samples saw the ingester paused for only {paused_s:.1f} s"
    over = {p: n for p, n in while_paused.items() if n > POLL}
    assert not over, f"messages ingested while paused, by pause number: {over}"
    # the gate closes within one poll of high water (each steady record adds at most one job)
    assert max_depth <= HIGH + POLL, f"queue reached {max_depth} jobs (high water {HIGH})"
    assert mem_end < 512 * 2**20, f"Redis used {mem_end} bytes"
    assert problems == [], f"{differing} windows differ from the model: {problems}"
    assert (lost, dup) == (0, 0)
    assert unfinished == []
