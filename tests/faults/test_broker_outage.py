"""Scenario 4: the Kafka broker is unreachable for 10 s while ingesters and workers run.

Why SIGSTOP and not a restart: the bundled Tansu broker keeps everything in memory, so a
restart loses every topic, message and committed offset, which is data loss on the broker's
side and not an outage (a real Kafka keeps its log). Freezing the broker process with SIGSTOP
and thawing it with SIGCONT makes it unreachable exactly like a network partition or a long
GC pause: connections stay open, requests time out, nothing is lost on the broker.

Afterwards the ingesters and the worker are the same processes, every window equals the
model, every batch is uploaded once or skipped, and uploads resumed after the outage.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from harness import (
    Sender,
    audit_batches,
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

from stationflow.local import wait_for
from stationflow.traffic import Traffic
from store.windows import WindowStore

pytestmark = [pytest.mark.faults, pytest.mark.heavy(34)]

OUTAGE_S = 10.0


def test_broker_outage_pauses_and_resumes_without_loss(private_broker: Any, private_redis: Any,
                                                       tmp_path: Path) -> None:
    bootstrap = private_broker.bootstrap
    sc = scenario(bootstrap, private_redis.url, tmp_path, prefix="bo", group="g-broker")
    cat, cfg, settings = sc.cat, sc.cfg, sc.settings
    n_messages = scaled(20_000, 1000)
    messages = Traffic(stations=100, seed=4, start_ms=int(time.time() * 1000), catalogue=cat).take(n_messages)
    first, second = messages[: n_messages // 2], messages[n_messages // 2:]

    procs = [ingester(tmp_path, cfg, "bo-a").start(), ingester(tmp_path, cfg, "bo-b").start(),
             worker(tmp_path, cfg, "bo-worker").start()]
    pids = [p.pid for p in procs]
    sender = Sender(bootstrap, cat)
    r = private_redis.client()
    produced: list[Any] = []
    try:
        for m in first:
            sender.send(m.topic, m.value, m.timestamp_ms)
        produced += sender.results()
        wait_for(lambda: int(r.hget("bo:counters:ingest", "messages") or 0) > len(first) // 4, 120,
                 "ingestion to start")
        feeder = threading.Thread(target=lambda: [sender.send(m.topic, m.value, m.timestamp_ms) for m in second],
                                  daemon=True)
        os.killpg(private_broker.pid, signal.SIGSTOP)
        stopped_at = int(time.time() * 1000)
        try:
            feeder.start()
            time.sleep(OUTAGE_S)
            alive_during = all(p.alive() for p in procs)
        finally:
            os.killpg(private_broker.pid, signal.SIGCONT)
        resumed_at = int(time.time() * 1000)
        feeder.join(180)
        produced += sender.results(timeout_s=180)
        wait_caught_up(bootstrap, "g-broker", produced, 300, procs=procs)
        store = WindowStore(r, settings.catalogue, "bo")
        model = Model(settings.catalogue).add_all(in_offset_order(produced))
        wait_orders_closed(store, model, 20)
        batches = wait_batches_finished(r, "bo", 180)
        audit = audit_batches(r, "bo", bootstrap, settings.catalogue, batches)
        same = [p.alive() and p.pid == pid for p, pid in zip(procs, pids, strict=True)]
    finally:
        for p in procs:
            p.stop(15)
        sender.close()

    problems, differing = window_differences(store, model)
    lost, dup = order_counts(store, model)
    after = sum(1 for h in batches.values() if h.get("state") == "uploaded" and int(h.get("finished", 0)) >= resumed_at)
    during = sum(1 for h in batches.values() if stopped_at <= int(h.get("created", 0)) <= resumed_at)
    kafka_retries = int(r.hget("bo:counters:ingest", "kafka_retries") or 0)
    figures("broker_outage", messages=n_messages, outage_s=OUTAGE_S, kills=0, losses=lost + len(audit.missing),
            duplicates=dup + audit.duplicates, windows_differing=differing, dead_letters=len(model.dead),
            kafka_retries=kafka_retries, batches_created_during_outage=during,
            batches_uploaded_after_outage=after, **audit.as_figures())
    assert alive_during and all(same), [p.log() for p in procs]
    assert problems == [], f"{differing} windows differ from the model: {problems}"
    assert (lost, dup) == (0, 0)
    assert audit.unfinished == [] and audit.missing == [] and audit.unexpected == [], audit.as_figures()
    assert audit.duplicates == audit.duplicates_after_reclaim
    assert audit.problems == [], audit.problems[:5]
    assert after > 0, "no batch was uploaded after the broker came back"
