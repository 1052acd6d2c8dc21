"""Replay marks against a real redis-server and the Redis Cluster: an ingester that dies at
any point of the scheduling (after the runs were reserved and the marks moved, after the
batches were created, after the jobs were enqueued) and redelivers the message schedules it
exactly once: one batch per (module, message), one job per station, no run reserved for ever.

The crash is an exception raised where the next round trip would start; the redelivery is
what the ingester does with the same message: apply (a no-op for the windows), filter by the
marks, plan the fresh triggers and schedule them with the runs handed back as resumed.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from kafkautil import unique_catalogue
from samplefiles import SAMPLES

from ingest.triggers import plan_runs
from parsers.envelopes import parse_message
from parsers.records import Source
from store.marks import ScheduleMarks
from store.pending import PendingRuns
from store.tracker import BatchTracker
from store.windows import WindowStore
from workers import scheduling
from workers.scheduling import ScheduleOptions, schedule, station_queue

S = ["1000000000000000001", "1000000000000000002"]
NOW = 1_900_000_000_000


class Crash(Exception):
    pass


class Ingest:
    """The ingester's path from one message to `schedule`, on one deployment."""

    def __init__(self, r: Any, qr: Any) -> None:
        self.r, self.qr = r, qr
        self.cat = unique_catalogue()
        self.store = WindowStore(r, self.cat, "sf")
        self.marks = ScheduleMarks(r)
        self.offset = 0

    def write(self, alias: str, value: Any, offset: int | None = None) -> list[Any]:
        spec = self.cat.topic(alias)
        parsed = parse_message(spec, orjson.dumps(value))
        if offset is None:
            self.offset += 1
            offset = self.offset
        return self.store.apply([(Source(spec.topic, 0, offset, NOW - 10_000 + offset), parsed.records)], NOW).triggers

    def deliver(self, triggers: list[Any], now_ms: int = NOW) -> Any:
        f = self.marks.filter(triggers)
        plan = plan_runs(f.fresh, self.cat, self.store.present, self.store.stations)
        return schedule(self.r, self.cat, f.resumed + plan.runs, ScheduleOptions(queue_r=self.qr), now_ms=now_ms,
                        marks=f.marks)


def _realtime(hour: int) -> dict[str, Any]:
    return {"realTimeData": [
        {"stationId": s, "hostCode": "52000000000088", "sendTime": f"2025-11-19 {hour:02d}:00:00",
         "gunPower": {"gunNo": ["01"], "outputPowerPerGunAvg": [10.0 + i], "outputPowerPerGunMax": [60.0]},
         "outputPowerPerStationAvg": 15.0 + i, "outputPowerPerStationMax": 90.0}
        for i, s in enumerate(S)]}


@pytest.fixture(params=["single", "cluster"])
def ingest(request: Any, redis_client: Any) -> Ingest:
    if request.param == "cluster":
        return Ingest(request.getfixturevalue("cluster_client"), redis_client)
    return Ingest(redis_client, redis_client)


def _loaded(p: Ingest) -> list[Any]:
    """Every station ready; the triggers of one realtime message (offset 10)."""
    param = json.loads((SAMPLES / "SCHEDULE-STATION-PARAM.json").read_text())[0]
    p.write("station_param", [{**param, "stationId": s} for s in S])
    p.write("environment_calendar", json.loads((SAMPLES / "SCHEDULE-ENVIRONMENT-CALENDAR.json").read_text()))
    for h in range(6, 9):
        p.write("station_realtime_data", _realtime(h))
    return p.write("station_realtime_data", _realtime(9), offset=10)


def _state(p: Ingest, batches: list[str]) -> tuple[dict[str, list[str]], int, list[str]]:
    """(batch -> stations expected, jobs queued, runs still reserved)."""
    tracker, pending = BatchTracker(p.r), PendingRuns(p.r)
    expected = {b: sorted(k[2:] for k in tracker.get(b) if k.startswith("e:")) for b in batches}
    reserved = [f"{s} {m}" for s in S for m, v in pending.pending(s).items() if v.startswith("?")]
    return expected, station_queue(p.qr, "stationflow").count, reserved


#: the second message comes later than the modules' min interval (its runs are pending and
#: get a job) or within it (rate control defers them: the batch waits, no job yet)
LATER, WITHIN = 3_600_000, 0


@pytest.mark.parametrize("gap_ms", [LATER, WITHIN], ids=["pending", "deferred"])
@pytest.mark.parametrize("crash_before", ["_create_batches", "enqueue_jobs", None])
def test_a_redelivery_after_a_crash_anywhere_in_scheduling_schedules_once(ingest: Ingest, crash_before: str | None,
                                                                           gap_ms: int, monkeypatch: Any) -> None:
    p = ingest
    pending = PendingRuns(p.r)
    # a first message scheduled and its runs taken by the stations' jobs
    clean = p.deliver(_loaded(p))
    modules = sorted(m for m, n in clean.created.items() if n)
    assert modules and clean.batches_created == len(modules)
    for s in S:
        pending.take(s, pending.pending(s)["_job"], NOW)
    station_queue(p.qr, "stationflow").empty()
    # the second message (offset 11), delivered once, the ingester dying before `crash_before`
    now = NOW + gap_ms
    first = p.write("station_realtime_data", _realtime(10), offset=11)
    if crash_before is not None:
        def crash(*a: Any, **kw: Any) -> Any:
            raise Crash(crash_before)
        monkeypatch.setattr(scheduling, crash_before, crash)
        with pytest.raises(Crash):
            p.deliver(first, now)
        monkeypatch.undo()
    else:
        p.deliver(first, now)
    topic = p.cat.topic("station_realtime_data").topic
    assert all(ScheduleMarks(p.r).read(s)[f"{topic}:0"] == 11 for s in S)  # moved with the reservation
    # the redelivery (the window write is a no-op), and once more for good measure
    for _ in range(2):
        p.deliver(p.write("station_realtime_data", _realtime(10), offset=11), now)
    ours = [f"{m}:{topic}:0:11" for m in modules]
    expected, queued, reserved = _state(p, ours)
    assert expected == {b: sorted(S) for b in ours}  # one batch per module, every station expected
    assert reserved == []  # every run takeable (its batch exists)
    if gap_ms == WITHIN:  # deferred by rate control: held in the rate hash, released later
        assert queued == 0
        assert all(pending.deferred(s)[m] == b for s in S for m, b in zip(modules, ours, strict=True))
        return
    assert queued == 1  # one group job for the stations (workers.group)
    (job,) = station_queue(p.qr, "stationflow").jobs
    assert sorted(job.args[0]) == sorted(S)
    took = {s: pending.take(s, pending.pending(s)["_job"], now) for s in S}
    assert took == {s: {m: [b] for m, b in zip(modules, ours, strict=True)} for s in S}
    # once taken, any later delivery schedules nothing
    res = p.deliver(p.write("station_realtime_data", _realtime(10), offset=11), now)
    assert res.batches_created == 0 and res.enqueued == [] and res.runs == 0
    assert station_queue(p.qr, "stationflow").count == 1
