"""The backpressure gate must close near `queue.high_water`, not one depth interval later.

Found by the slow-workers scenario: with the queue depth read only every 0.5 s, a fast
ingester scheduled hundreds of station jobs between two reads and the queue reached ten
times its high water mark before fetching paused. The loop now also reads the depth as soon
as the runs it scheduled since the last read could have carried the queue past high water.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import unit.test_ingest_loop as loop_helpers
from unit.test_ingest_loop import ACDC, acdc, make, record, seed

from ingest.backpressure import QueueGate

pytestmark = pytest.mark.faults

HIGH, LOW = 5, 2


def test_gate_closes_before_the_queue_runs_far_past_high_water(fake_redis: Any) -> None:
    # records near this test's wall clock, not the collection's: in a long session the import-time
    # clock is minutes old and the device window (TTL 60 s) would take them as stale on arrival
    loop_helpers.NOW_MS = int(time.time() * 1000)
    stations = [f"S{i}" for i in range(30)]
    polls = [[record(ACDC, 0, i, acdc(s))] for i, s in enumerate(stations)]
    holder: dict[str, Any] = {}
    reads: list[int] = []

    def depth() -> int:
        consumer, sched = holder["consumer"], holder["sched"]
        if any(e.startswith("pause") for e in consumer.events):
            return 0  # the workers drained the queue once fetching paused
        n = sum(len(c) for c in sched.calls)  # every scheduled run still queued
        reads.append(n)
        return n

    # a depth interval far longer than the test: only the runs-based read can close the gate
    ing, consumer, sched, store, _ = make(fake_redis, polls, partitions=[(ACDC, 0)], queue_depth=depth,
                                          gate=QueueGate(HIGH, LOW), depth_interval_s=3600.0)
    holder.update(consumer=consumer, sched=sched)
    seed(store, *stations)
    assert ing.run() == 0
    pauses = [e for e in consumer.events if e.startswith("pause")]
    assert len(pauses) == 1
    runs_per_poll = max(len(c) for c in sched.calls)
    assert reads[-1] > HIGH  # the read that closed the gate
    assert reads[-1] <= HIGH + runs_per_poll  # ... at most one poll past high water
    assert consumer.commits[-1] == {(ACDC, 0): 30}  # nothing lost by pausing
