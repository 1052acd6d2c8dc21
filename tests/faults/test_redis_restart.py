"""Scenario 3: Redis goes away for 10 s in the middle of ingestion and comes back with its data.

The ingesters must pause (stay alive, commit nothing new) and resume. To prove that no offset
was committed for a record that was not written, one ingester is SIGKILLed at the end of the
outage: whatever it had polled but not written is lost from its memory, so anything it had
committed without writing could never come back and the windows would miss it. Afterwards
every window equals the model.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from harness import (
    Sender,
    committed,
    figures,
    in_offset_order,
    ingester,
    order_counts,
    scaled,
    scenario,
    wait_caught_up_after_kill,
    wait_orders_closed,
    window_differences,
)
from model import Model

from stationflow.local import wait_for
from stationflow.traffic import Traffic
from store.windows import WindowStore

pytestmark = [pytest.mark.faults, pytest.mark.heavy(38)]

OUTAGE_S = 10.0


def test_redis_restart_pauses_and_resumes_without_loss(kafka_bootstrap: str, private_redis: Any,
                                                       tmp_path: Path) -> None:
    sc = scenario(kafka_bootstrap, private_redis.url, tmp_path, prefix="rr", group="g-redis")
    cat, cfg, settings = sc.cat, sc.cfg, sc.settings
    n_messages = scaled(30_000, 1000)
    messages = Traffic(stations=100, seed=3, start_ms=int(time.time() * 1000), catalogue=cat).take(n_messages)
    first, second = messages[: n_messages // 2], messages[n_messages // 2:]

    a = ingester(tmp_path, cfg, "rr-a").start()
    b = ingester(tmp_path, cfg, "rr-b").start()
    sender = Sender(kafka_bootstrap, cat)
    r = private_redis.client()
    produced: list[Any] = []
    try:
        for m in first:
            sender.send(m.topic, m.value, m.timestamp_ms)
        produced += sender.results()
        # stop Redis once ingestion is under way, with more traffic arriving during the outage
        wait_for(lambda: int(r.hget("rr:counters:ingest", "messages") or 0) > len(first) // 4, 120,
                 "ingestion to start")
        feeder = threading.Thread(target=lambda: [sender.send(m.topic, m.value, m.timestamp_ms) for m in second],
                                  daemon=True)
        private_redis.stop()  # SIGTERM: Redis writes its AOF and exits
        feeder.start()
        time.sleep(2.0)  # commits of work written before the stop may still land
        during = committed(kafka_bootstrap, "g-redis")
        time.sleep(OUTAGE_S - 2.0)
        after = committed(kafka_bootstrap, "g-redis")
        alive_during = a.alive() and b.alive()
        b.kill()  # loses whatever it polled but could not write
        private_redis.start()
        r = private_redis.client()
        b.start()
        feeder.join(120)
        produced += sender.results()
        wait_caught_up_after_kill(kafka_bootstrap, "g-redis", produced, 300, procs=[a, b])
        store = WindowStore(r, settings.catalogue, "rr")
        model = Model(settings.catalogue).add_all(in_offset_order(produced))
        wait_orders_closed(store, model, 20)
        assert a.stop() == 0, a.log()
        assert b.stop() == 0, b.log()
    finally:
        a.kill()
        b.kill()
        sender.close()

    problems, differing = window_differences(store, model)
    lost, dup = order_counts(store, model)
    retries = int(r.hget("rr:counters:ingest", "store_retries") or 0)
    paused = "redis/queue unavailable" in a.log(10**7) + b.log(10**7)
    advanced = {f"{tp.topic}[{tp.partition}]": (during.get(tp), off) for tp, off in after.items()
                if off != during.get(tp)}
    figures("redis_restart", messages=n_messages, outage_s=OUTAGE_S, kills=1, losses=lost, duplicates=dup,
            windows_differing=differing, dead_letters=len(model.dead), store_retries=retries,
            commits_during_outage=len(advanced))
    assert alive_during, "an ingester died during the Redis outage instead of pausing"
    assert paused, "no ingester logged the outage"
    assert advanced == {}, f"offsets committed while Redis was down: {advanced}"
    assert problems == [], f"{differing} windows differ from the model: {problems}"
    assert (lost, dup) == (0, 0)
    assert model.dead == []
