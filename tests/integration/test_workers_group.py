"""Station group jobs (workers.group) against a real redis-server and real RQ workers: each
pending run of each station runs once, a slow module at one station holds back no other
module's batch, a group that dies midway leaves only its unreported runs to its retry, and
the failure callback reports every station's held runs."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest
from integration.test_workers_jobs import _ctx, _wait_closed, _write  # the same helpers
from rq import Queue
from rq.serializers import JSONSerializer
from samplefiles import SAMPLES

from parsers.batches import PlannedRun
from store.tracker import BatchTracker
from workers import context as wctx
from workers import events, jobs
from workers.context import WorkerContext
from workers.rqworker import StationWorker
from workers.scheduling import ScheduleOptions, schedule

STATIONS = [f"41000000000000000{i:02d}" for i in range(5)]
MODULES = ("load_prediction", "SOH_model")


def _ready(ctx: WorkerContext, stations: list[str]) -> None:
    """station_param, calendar and one realtime hour: load_prediction and SOH_model are ready."""
    param = json.loads((SAMPLES / "SCHEDULE-STATION-PARAM.json").read_text())[0]
    _write(ctx, "station_param", [{**param, "stationId": s} for s in stations], 1)
    _write(ctx, "environment_calendar", json.loads((SAMPLES / "SCHEDULE-ENVIRONMENT-CALENDAR.json").read_text()), 2)
    _write(ctx, "station_realtime_data", {"realTimeData": [
        {"stationId": s, "sendTime": "2025-11-19 08:00:00", "outputPowerPerStationAvg": 42.0 + i,
         "gunPower": {"gunNo": ["01"], "outputPowerPerGunAvg": [42.0], "outputPowerPerGunMax": [80.0]}}
        for i, s in enumerate(stations)]}, 3)


def _runs(stations: list[str], batch: str) -> list[PlannedRun]:
    return [PlannedRun(s, m, f"{m}:{batch}") for s in stations for m in MODULES]


class _Recorder:
    """Algorithms that count their calls per (station, module) and the most calls of one
    module that ever ran at once."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.active: Counter[str] = Counter()
        self.most_at_once: Counter[str] = Counter()
        self.lock = threading.Lock()

    def algorithm(self, module: str):
        def run(station, inp):
            with self.lock:
                self.calls[(station, module)] += 1
                self.active[module] += 1
                self.most_at_once[module] = max(self.most_at_once[module], self.active[module])
            time.sleep(0.002)
            with self.lock:
                self.active[module] -= 1
            return {"station": station, "module": module}
        return run


def test_group_jobs_run_each_pending_run_once_with_a_real_worker(redis_client):
    rec = _Recorder()
    ctx = _ctx(redis_client, **{m: rec.algorithm(m) for m in MODULES})
    _ready(ctx, STATIONS)
    opts = ScheduleOptions(group_size=2)
    first = schedule(redis_client, ctx.catalogue, _runs(STATIONS, "T:0:1"), opts)
    again = schedule(redis_client, ctx.catalogue, _runs(STATIONS, "T:0:2"), opts)  # before any worker ran
    assert len(first.enqueued) == 3 and again.absorbed == {m: len(STATIONS) for m in MODULES}
    wctx.install(ctx)
    try:
        q = Queue("stationflow", connection=redis_client, serializer=JSONSerializer)
        StationWorker([q], connection=redis_client, serializer=JSONSerializer).work(burst=True)
    finally:
        wctx.install(None)
    assert rec.calls == {(s, m): 1 for s in STATIONS for m in MODULES}
    assert rec.most_at_once == {m: 1 for m in MODULES}  # one module's calls one after another
    tracker = BatchTracker(redis_client)
    for m in MODULES:
        b = tracker.get(f"{m}:T:0:1")
        assert b["state"] == "uploading" and b["ok"] == str(len(STATIONS)) and b["reported"] == str(len(STATIONS))
    for s in STATIONS:
        assert not any(k in ctx.pending.pending(s) for k in MODULES)
    assert not list(redis_client.scan_iter("sf:{*}:running:*"))  # every running marker removed


def test_a_slow_module_at_one_station_holds_back_no_other_module_of_the_group(redis_client):
    """SOH_model at the group's first station waits, inside its run, until load_prediction's
    batch (every station of the group) has completed: the ended runs were written while it ran."""
    tracker = BatchTracker(redis_client)
    rec = _Recorder()
    seen = []

    def slow_soh(station, inp):
        if station == STATIONS[0]:
            seen.append(_wait_closed(tracker, "load_prediction:T:0:1"))
        return {"soh": 1}

    ctx = _ctx(redis_client, SOH_model=slow_soh, load_prediction=rec.algorithm("load_prediction"))
    group = STATIONS[:3]
    _ready(ctx, group)
    schedule(redis_client, ctx.catalogue, _runs(group, "T:0:1"))
    out = jobs.execute_group(ctx, group, "job-g")
    assert seen == ["uploading"]  # completed and claimed before the slow SOH_model returned
    assert all({r.module: r.outcome for r in out[s].runs} == {"SOH_model": "ok", "load_prediction": "ok"}
               for s in group)
    assert out[group[0]].writes >= 2  # the slow run was written on its own
    assert tracker.get("SOH_model:T:0:1")["ok"] == "3"


class _Died(BaseException):
    """Stands for the job's process dying in the middle of a run."""


def test_a_group_that_dies_midway_leaves_only_its_unreported_runs_to_its_retry(redis_client):
    tracker = BatchTracker(redis_client)
    group = STATIONS[:2]

    def dies(station, inp):
        if station == group[1]:
            _wait_closed(tracker, "load_prediction:T:0:1")
            raise _Died()
        return {"soh": 1}

    ctx = _ctx(redis_client, SOH_model=dies, load_prediction=lambda s, i: {"p": 1})
    _ready(ctx, group)
    schedule(redis_client, ctx.catalogue, _runs(group, "T:0:1"))
    with pytest.raises(_Died):
        jobs.execute_group(ctx, group, "job-d")
    assert set(ctx.pending.running(group[1], "job-d")) == {"_started", "SOH_model"}  # load_prediction went
    ctx.algorithms["SOH_model"] = lambda s, i: {"soh": 2}
    retry = jobs.execute_group(ctx, group, "job-d")
    again = {(s, r.module) for s in group for r in retry[s].runs}
    assert (group[1], "SOH_model") in again and not any(m == "load_prediction" for _, m in again)
    lp, soh = tracker.get("load_prediction:T:0:1"), tracker.get("SOH_model:T:0:1")
    assert lp["reported"] == "2" and lp["ok"] == "2"  # reported once each, not twice
    assert soh["reported"] == "2" and soh["state"] == "uploading"
    assert all(ctx.pending.running(s, "job-d") == {} for s in group)


def test_failure_callback_of_a_group_job_reports_every_station_s_held_runs(redis_client):
    ctx = _ctx(redis_client)
    group = STATIONS[:2]
    _ready(ctx, group)
    res = schedule(redis_client, ctx.catalogue, _runs(group, "T:0:1"))
    jid = res.enqueued[0]
    for s in group:  # the job took them, then failed for good
        assert set(ctx.pending.take(s, jid, int(time.time() * 1000))) == set(MODULES)
    counted: Counter[str] = Counter()

    def observe(name: str, n: int, labels: dict) -> None:
        if name == "jobs":
            counted[labels["outcome"]] += n

    wctx.install(ctx)
    events.EVENTS.counters.append(observe)
    try:
        jobs.on_job_failure(SimpleNamespace(args=[group], id=jid, retries_left=0), redis_client)
    finally:
        events.EVENTS.counters.remove(observe)
        wctx.install(None)
    assert counted == {"failed": 2}  # one failed station job per station of the group
    tracker = BatchTracker(redis_client)
    for m in MODULES:
        b = tracker.get(f"{m}:T:0:1")
        assert b["failed"] == "2" and b["f:exception"] == "2" and b["state"] == "skipped"


def test_a_group_read_equals_each_station_s_own_read(redis_client):
    """One read round trip for the group (the calendar read once and shared) gives every
    station what its own read gives, with and without the window memo."""
    ctx = _ctx(redis_client)
    group = STATIONS[:3]
    _ready(ctx, group)
    wanted = {s: list(MODULES) for s in group}
    for memo in (None, ctx.hourly_memo):
        together = ctx.store.read_stations(wanted, memo=memo)
        for s in group:
            alone = ctx.store.read_station(s, MODULES)
            assert dict(together[s]) == dict(alone) and together[s].station == s
    assert together[group[0]]["environment_calendar"] is together[group[2]]["environment_calendar"]
    assert together[group[0]]["station_realtime_data"] != together[group[1]]["station_realtime_data"]
