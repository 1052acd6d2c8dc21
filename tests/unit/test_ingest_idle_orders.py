"""`--until-idle` and open order seconds: the loop closes every due second and waits for the
ones its last writes opened (the fake consumer and clocks of test_ingest_loop; fakeredis)."""

from __future__ import annotations

import json
from typing import Any

from unit.test_ingest_loop import CAT, FakeClock, FakeConsumer, Scheduler, record, sample

from ingest.loop import Ingester
from ingest.options import LoopOptions
from ingest.process import Processor
from ingest.stats import IngestStats
from store.dlq import DeadLetters
from store.keys import Keys
from store.windows import WindowStore

ORDER = "SCHEDULE-CAR-ORDER"


def order(station: str) -> bytes:
    return json.dumps(dict(json.loads(sample(ORDER)), stationId=station)).encode()


def test_idle_exit_waits_until_the_seconds_it_opened_are_closed(fake_redis: Any) -> None:
    clock = FakeClock()
    start = clock.t
    t0_ms = 1_763_524_800_000
    stations = [f"S{i}" for i in range(5)]
    polls = [[record(ORDER, 0, i, order(s), ts=t0_ms + 100) for i, s in enumerate(stations)]]
    consumer = FakeConsumer(clock, polls, [(ORDER, 0)])
    store = WindowStore(fake_redis, CAT, "sf")
    # the processor's wall clock follows the loop's fake monotonic clock
    proc = Processor(CAT, store, DeadLetters(fake_redis, "sf"), Scheduler(), IngestStats(),
                     clock=lambda: t0_ms / 1000 + (clock.t - start))
    ing = Ingester(consumer, proc, IngestStats(), LoopOptions(until_idle_s=0.5, commit_interval_s=0.0,
                   poll_timeout_ms=100, close_interval_s=10.0), clock=clock, sleep=clock.sleep)
    consumer.ingester = ing
    assert ing.run() == 0
    k = Keys("sf")
    assert [s for s in stations if fake_redis.hexists(k.orders_state(s, "car_order"), "open")] == []
    assert all(len(store.read_windows(s, ["car_order"])["car_order"]) == 1 for s in stations)
    assert fake_redis.zcard(k.orders_due("car_order")) == 0
    assert clock.t - start >= CAT.by_alias["car_order"].order_close_s  # it waited for the deadline


def test_idle_exit_does_not_wait_without_order_writes(fake_redis: Any) -> None:
    clock = FakeClock()
    start = clock.t
    consumer = FakeConsumer(clock, [], [(ORDER, 0)])
    store = WindowStore(fake_redis, CAT, "sf")
    proc = Processor(CAT, store, DeadLetters(fake_redis, "sf"), Scheduler(), IngestStats())
    ing = Ingester(consumer, proc, IngestStats(), LoopOptions(until_idle_s=0.5, commit_interval_s=0.0,
                   poll_timeout_ms=100, close_interval_s=10.0), clock=clock, sleep=clock.sleep)
    consumer.ingester = ing
    assert ing.run() == 0
    assert clock.t - start < 1.0
