"""Station job outcomes against a real redis-server (no Kafka: uploads are not the point here)."""

from __future__ import annotations

import asyncio
import json
import time

import orjson
import pytest
from samplefiles import SAMPLES

from parsers.batches import PlannedRun
from parsers.catalogue import Catalogue
from parsers.envelopes import parse_message
from parsers.records import Source
from store.tracker import BatchTracker
from workers import jobs
from workers.context import WorkerContext
from workers.scheduling import schedule
from workers.sweeper import sweep

S = "4000000000000000001"


#: replays of a message that already ran, scheduled within a module's min_interval_s, are
#: deferred first (rate control, tests/unit/test_workers_rate_limit.py); the tests of the
#: job's own replay check schedule them without the limit
NO_RATE_LIMIT = Catalogue.build(module_overrides={m: {"min_interval_s": 0} for m in ("load_prediction", "SOH_model")})


def _ctx(r, cat: Catalogue | None = None, **algorithms) -> WorkerContext:
    cat = cat or Catalogue.build()
    ctx = WorkerContext.build(r, cat, algorithms=algorithms)
    ctx.uploader = None  # completed batches stay `uploading`: enough to read their counts
    return ctx


def _write(ctx: WorkerContext, alias: str, value, offset: int) -> None:
    spec = ctx.catalogue.topic(alias)
    now = int(time.time() * 1000)
    ctx.store.apply([(Source(spec.topic, 0, offset, now - 1000), parse_message(spec, orjson.dumps(value)).records)], now)


def _load_ready(ctx: WorkerContext) -> None:
    param = json.loads((SAMPLES / "SCHEDULE-STATION-PARAM.json").read_text())[0]
    _write(ctx, "station_param", [{**param, "stationId": S}], 1)
    _write(ctx, "environment_calendar", json.loads((SAMPLES / "SCHEDULE-ENVIRONMENT-CALENDAR.json").read_text()), 2)
    _write(ctx, "station_realtime_data", {"realTimeData": [
        {"stationId": S, "sendTime": "2025-11-19 08:00:00", "outputPowerPerStationAvg": 42.0,
         "gunPower": {"gunNo": ["01"], "outputPowerPerGunAvg": [42.0], "outputPowerPerGunMax": [80.0]}}]}, 3)


def _run(ctx, runs, job_id="job-1"):
    schedule(ctx.r, ctx.catalogue, runs)
    return jobs.execute(ctx, S, job_id)


def test_timeout_exception_none_and_unserialisable_outcomes(redis_client):
    def slow(station, inp):
        time.sleep(2)
        return {"too": "late"}

    def boom(station, inp):
        raise ValueError("bad model")

    cat = Catalogue.build(module_overrides={"load_prediction": {"run_timeout_s": 0.2}})
    ctx = _ctx(redis_client, cat, load_prediction=slow, SOH_model=boom,
               evaluation_model=lambda s, i: None, customer_mining=lambda s, i: {"odd": {1, 2}})
    _load_ready(ctx)
    runs = [PlannedRun(S, "load_prediction", "load_prediction:T:0:1"), PlannedRun(S, "SOH_model", "SOH_model:T:0:1"),
            PlannedRun(S, "customer_mining", "customer_mining:heartbeat:0:1")]
    summary = _run(ctx, runs)
    got = {r.module: (r.outcome, r.reason) for r in summary.runs}
    assert got == {"load_prediction": ("failed", "timeout"), "SOH_model": ("failed", "exception"),
                   "customer_mining": ("failed", "unserialisable")}
    tr = BatchTracker(redis_client)
    assert tr.get("load_prediction:T:0:1")["f:timeout"] == "1"
    assert tr.get("customer_mining:heartbeat:0:1")["state"] == "skipped"
    runs_counters = {k.decode(): int(v) for k, v in redis_client.hgetall("sf:counters:runs").items()}
    assert runs_counters["load_prediction:failed:timeout"] == 1 and runs_counters["SOH_model:failed:exception"] == 1


def test_async_algorithm_is_awaited_and_result_normalised(redis_client):
    async def predict(station, inp):
        await asyncio.sleep(0.01)
        return [inp["stationId"], inp["topics"]["station_realtime_data"]["outputPowerPerStationAvg"][-1]]

    ctx = _ctx(redis_client, load_prediction=predict)
    _load_ready(ctx)
    summary = _run(ctx, [PlannedRun(S, "load_prediction", "load_prediction:T:0:1")])
    assert [(r.outcome, r.reason) for r in summary.runs] == [("ok", None)]
    stored = ctx.store.read_output(S, "load_prediction")[0]["payload"]
    assert stored == {"station_id": S, "value": [S, 42.0]}
    b = BatchTracker(redis_client).get("load_prediction:T:0:1")
    assert b["state"] == "uploading" and b["wrapped"] == "1" and orjson.loads(b[f"r:{S}"]) == stored


def test_not_ready_and_upstream_failed(redis_client):
    def boom(station, inp):
        raise RuntimeError("pv model down")

    ctx = _ctx(redis_client, load_prediction=boom)
    _load_ready(ctx)
    # station_guidance needs load_prediction (fails here) and evaluation_model (never stored)
    runs = [PlannedRun(S, "load_prediction", "load_prediction:T:0:1"),
            PlannedRun(S, "station_guidance", "station_guidance:T:0:1"),
            PlannedRun(S, "pv_prediction", "pv_prediction:T:0:1")]
    summary = _run(ctx, runs)
    got = {r.module: (r.outcome, r.reason) for r in summary.runs}
    assert got["load_prediction"] == ("failed", "exception")
    assert got["station_guidance"] == ("failed", "upstream_failed")
    assert got["pv_prediction"] == ("failed", "not_ready")  # no device_pv, no weather stored


def test_replayed_run_is_not_run_twice(redis_client):
    calls = []

    def count(station, inp):
        calls.append(station)
        return {"n": len(calls)}

    ctx = _ctx(redis_client, NO_RATE_LIMIT, load_prediction=count)
    _load_ready(ctx)
    run = [PlannedRun(S, "load_prediction", "load_prediction:T:0:1")]
    _run(ctx, run, "job-a")
    again = _run(ctx, run, "job-b")  # the same message scheduled again after the job took it
    assert calls == [S] and again.skipped_replays == 1 and again.runs == []


def test_dead_job_is_reported_lost_by_the_sweeper(redis_client):
    ctx = _ctx(redis_client)
    ctx.lost_after_s = 1.0
    _load_ready(ctx)
    schedule(redis_client, ctx.catalogue, [PlannedRun(S, "load_prediction", "load_prediction:T:0:1"),
                                           PlannedRun(S, "SOH_model", "SOH_model:T:0:1")])
    started = int(time.time() * 1000)
    taken = ctx.pending.take(S, "job-dies", started)  # the job took its runs, then its process died
    assert set(taken) == {"load_prediction", "SOH_model"}
    assert not sweep(ctx, now_ms=started + 500).lost_runs  # not yet: it might be working
    res = sweep(ctx, now_ms=started + 1500)
    assert res.lost_runs == 2 and res.skipped == 2  # no ok result: skipped, not uploaded
    b = BatchTracker(redis_client).get("SOH_model:T:0:1")
    assert b["f:lost"] == "1" and b["state"] == "skipped"
    assert not sweep(ctx, now_ms=started + 3000).lost_runs


def test_failure_callback_reports_held_runs_once_retries_are_exhausted(redis_client):
    from workers import context as wctx

    ctx = _ctx(redis_client)
    wctx.install(ctx)
    try:
        schedule(redis_client, ctx.catalogue, [PlannedRun(S, "load_prediction", "load_prediction:T:0:9")])
        ctx.pending.take(S, "job-x", int(time.time() * 1000))

        class FakeJob:  # the two attributes RQ's callback contract gives us
            id = "job-x"
            args = (S,)
            retries_left = 1

        jobs.on_job_failure(FakeJob, redis_client, RuntimeError, RuntimeError("redis hiccup"), None)
        assert BatchTracker(redis_client).get("load_prediction:T:0:9")["reported"] == "0"  # a retry follows
        FakeJob.retries_left = 0
        jobs.on_job_failure(FakeJob, redis_client, RuntimeError, RuntimeError("redis hiccup"), None)
        b = BatchTracker(redis_client).get("load_prediction:T:0:9")
        assert b["f:exception"] == "1" and b["state"] == "skipped"
    finally:
        wctx.install(None)


def test_retry_of_the_same_job_runs_what_its_first_attempt_held(redis_client):
    ctx = _ctx(redis_client)
    _load_ready(ctx)
    schedule(redis_client, ctx.catalogue, [PlannedRun(S, "load_prediction", "load_prediction:T:0:1")])
    ctx.pending.take(S, "job-r", int(time.time() * 1000))  # attempt 1 died after taking
    schedule(redis_client, ctx.catalogue, [PlannedRun(S, "SOH_model", "SOH_model:T:0:2")])
    other = jobs.execute(ctx, S, "job-other")  # another job of the station never takes job-r's runs
    assert [r.module for r in other.runs] == ["SOH_model"]
    retry = jobs.execute(ctx, S, "job-r")
    assert [(r.module, r.outcome) for r in retry.runs] == [("load_prediction", "ok")]
    assert ctx.pending.running(S, "job-r") == {}


@pytest.mark.parametrize("layout", ["flat"])
def test_flat_layout_input_reaches_the_algorithm(redis_client, layout):
    seen = {}

    def grab(station, inp):
        seen.update(inp)
        return {"ok": True}

    cat = Catalogue.build(module_overrides={"load_prediction": {"layout": layout}})
    ctx = _ctx(redis_client, cat, load_prediction=grab)
    _load_ready(ctx)
    _run(ctx, [PlannedRun(S, "load_prediction", "load_prediction:T:0:1")])
    assert seen["stationId"] == S and seen["outputPowerPerStationAvg"][-1] == 42.0


def test_job_after_a_flushed_script_cache_writes_and_reports_once(redis_client):
    """Every write of a job goes in one pipeline of EVALSHAs; after a Redis restart without the
    scripts they are re-sent, and the plain commands of that pipeline still run once."""
    ctx = _ctx(redis_client, NO_RATE_LIMIT, load_prediction=lambda s, i: {"p": 1}, SOH_model=lambda s, i: None)
    _load_ready(ctx)
    _run(ctx, [PlannedRun(S, "load_prediction", "load_prediction:T:0:1")], "job-1")
    redis_client.script_flush()
    runs = [PlannedRun(S, "load_prediction", "load_prediction:T:0:2"), PlannedRun(S, "SOH_model", "SOH_model:T:0:2")]
    summary = _run(ctx, runs, "job-2")
    assert {r.module: r.outcome for r in summary.runs} == {"load_prediction": "ok", "SOH_model": "none"}
    assert summary.statuses == {"claimed": 1, "skipped": 1}
    assert len(ctx.store.read_output(S, "load_prediction", 5)) == 2  # one per job, not re-pushed
    counters = {k.decode(): int(v) for k, v in redis_client.hgetall("sf:counters:runs").items()}
    assert counters["load_prediction:ok"] == 2 and counters["SOH_model:none"] == 1
    assert ctx.pending.running(S, "job-2") == {}
    b = BatchTracker(redis_client).get("load_prediction:T:0:2")
    assert b["state"] == "uploading" and b["ok"] == "1"


def test_replay_check_with_the_job_hint_and_for_runs_that_joined_later(redis_client):
    calls = []

    def count(station, inp):
        calls.append(inp["module"])
        return {"n": len(calls)}

    ctx = _ctx(redis_client, NO_RATE_LIMIT, load_prediction=count, SOH_model=count)
    _load_ready(ctx)
    lp, soh = PlannedRun(S, "load_prediction", "load_prediction:T:0:1"), PlannedRun(S, "SOH_model", "SOH_model:T:0:1")
    schedule(redis_client, ctx.catalogue, [lp, soh])
    jobs.execute(ctx, S, "job-a", batch_hint=[lp.batch_id, soh.batch_id])
    assert sorted(calls) == ["SOH_model", "load_prediction"]  # side by side on their lanes: any order
    # both replayed: one checked in the take's round trip (hinted), one on its own (joined later)
    schedule(redis_client, ctx.catalogue, [lp, soh])
    again = jobs.execute(ctx, S, "job-b", batch_hint=[lp.batch_id, "other:T:0:9"])
    assert sorted(calls) == ["SOH_model", "load_prediction"] and again.skipped_replays == 2 and again.runs == []
    assert ctx.pending.running(S, "job-b") == {}


def test_rq_job_carries_its_batches_in_meta(redis_client):
    from rq.job import Job
    from rq.serializers import JSONSerializer

    ctx = _ctx(redis_client)
    res = schedule(redis_client, ctx.catalogue, [PlannedRun(S, "load_prediction", "load_prediction:T:0:1"),
                                                 PlannedRun(S, "SOH_model", "SOH_model:T:0:1")])
    job = Job.fetch(res.enqueued[0], connection=redis_client, serializer=JSONSerializer)
    assert sorted(job.meta["batches"][S]) == ["SOH_model:T:0:1", "load_prediction:T:0:1"]


def test_run_that_waited_past_its_deadline_reports_to_the_next_batch(redis_client):
    """Workers down longer than a batch timeout: the queued job survives, the first batch
    expires without the station, the next message's batch expects it and gets its result,
    and the module runs once."""
    calls = []

    def count(station, inp):
        calls.append(station)
        return {"n": len(calls)}

    ctx = _ctx(redis_client, load_prediction=count)
    _load_ready(ctx)
    t0 = int(time.time() * 1000)
    first = schedule(redis_client, ctx.catalogue, [PlannedRun(S, "load_prediction", "load_prediction:T:0:1")],
                     now_ms=t0 - 6000)
    assert sweep(ctx, now_ms=t0).skipped == 1  # batch 1 expired while no worker ran
    second = schedule(redis_client, ctx.catalogue, [PlannedRun(S, "load_prediction", "load_prediction:T:0:2")],
                      now_ms=t0)
    assert second.batches_created == 1 and second.enqueued == [] and sum(second.absorbed.values()) == 0
    summary = jobs.execute(ctx, S, first.enqueued[0])
    assert calls == [S] and [(r.module, r.batches) for r in summary.runs] == [("load_prediction", ["load_prediction:T:0:2"])]
    b = BatchTracker(redis_client).get("load_prediction:T:0:2")
    assert b["e:" + S] == "ok" and b["state"] == "uploading"
    assert BatchTracker(redis_client).get("load_prediction:T:0:1")["timed_out"] == "1"


def _wait_closed(tracker: BatchTracker, batch_id: str, within_s: float = 10.0) -> str:
    """The batch's state once it left `open` (or `open` after `within_s`)."""
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        state = tracker.get(batch_id).get("state")
        if state != "open":
            return state
        time.sleep(0.01)
    return "open"


def test_a_module_reports_while_a_slow_sibling_still_runs(redis_client):
    """Per-module reporting: load_prediction's batch completes while SOH_model, started in
    the same job, is still running (SOH looks at the tracker from inside its run)."""
    tracker = BatchTracker(redis_client)
    seen = []

    def slow_soh(station, inp):
        seen.append(_wait_closed(tracker, "load_prediction:T:0:1"))
        return {"soh": 1}

    ctx = _ctx(redis_client, SOH_model=slow_soh, load_prediction=lambda s, i: {"p": 1})
    _load_ready(ctx)
    summary = _run(ctx, [PlannedRun(S, "SOH_model", "SOH_model:T:0:1"),
                         PlannedRun(S, "load_prediction", "load_prediction:T:0:1")])
    assert seen == ["uploading"]  # completed and claimed before SOH_model returned
    assert {r.module: r.outcome for r in summary.runs} == {"SOH_model": "ok", "load_prediction": "ok"}
    assert summary.writes == 2 and ctx.pending.running(S, "job-1") == {}
    assert tracker.get("SOH_model:T:0:1")["e:" + S] == "ok"


class _Died(BaseException):
    """Stands for the job's process dying in the middle of a run."""


def test_a_job_that_dies_midway_leaves_only_its_unreported_runs_to_its_retry(redis_client):
    tracker = BatchTracker(redis_client)

    def dies(station, inp):
        _wait_closed(tracker, "load_prediction:T:0:1")
        raise _Died()

    ctx = _ctx(redis_client, SOH_model=dies, load_prediction=lambda s, i: {"p": 1})
    _load_ready(ctx)
    with pytest.raises(_Died):
        _run(ctx, [PlannedRun(S, "SOH_model", "SOH_model:T:0:1"),
                   PlannedRun(S, "load_prediction", "load_prediction:T:0:1")], "job-d")
    held = ctx.pending.running(S, "job-d")
    assert set(held) == {"_started", "SOH_model"}  # load_prediction was reported and removed
    ctx.algorithms["SOH_model"] = lambda s, i: {"soh": 2}
    retry = jobs.execute(ctx, S, "job-d")
    assert [(r.module, r.outcome) for r in retry.runs] == [("SOH_model", "ok")]
    assert tracker.get("load_prediction:T:0:1")["reported"] == "1"  # reported once, not twice


def test_dependent_waits_only_for_its_own_dependencies(redis_client):
    """station_guidance depends on load_prediction (and evaluation_model, not in this job):
    it runs and reports while SOH_model, which it does not depend on, is still running."""
    tracker = BatchTracker(redis_client)
    seen = []

    def slow_soh(station, inp):
        seen.append(_wait_closed(tracker, "station_guidance:T:0:1"))
        return {"soh": 1}

    ctx = _ctx(redis_client, SOH_model=slow_soh, load_prediction=lambda s, i: {"p": 1},
               station_guidance=lambda s, i: {"g": i["deps"]["load_prediction"]})
    _load_ready(ctx)
    ctx.store.store_output(S, "evaluation_model", {"e": 1}, int(time.time() * 1000))
    summary = _run(ctx, [PlannedRun(S, "SOH_model", "SOH_model:T:0:1"),
                         PlannedRun(S, "load_prediction", "load_prediction:T:0:1"),
                         PlannedRun(S, "station_guidance", "station_guidance:T:0:1")])
    assert seen == ["uploading"]
    assert [r.module for r in summary.runs] == ["load_prediction", "station_guidance", "SOH_model"]
    # it got load_prediction's result of this job, in memory
    assert json.loads(tracker.get("station_guidance:T:0:1")["r:" + S])["g"] == {"station_id": S, "p": 1}


def test_data_quality_ages_are_taken_at_each_module_start(redis_client):
    """station_guidance starts after load_prediction (its dependency) ends, >= 0.3 s after the
    job started: the age of evaluation_model's output, stored just before the job, is taken
    then (at the job's start it would be a few ms)."""
    ages = {}

    def slow_lp(station, inp):
        time.sleep(0.3)
        return {"p": 1}

    def guidance(station, inp):
        ages["station_guidance"] = inp["_data_quality"]["age_s"]["evaluation_model"]
        return {"g": 1}

    ctx = _ctx(redis_client, load_prediction=slow_lp, station_guidance=guidance)
    _load_ready(ctx)
    ctx.store.store_output(S, "evaluation_model", {"e": 1}, int(time.time() * 1000))
    _run(ctx, [PlannedRun(S, "load_prediction", "load_prediction:T:0:1"),
               PlannedRun(S, "station_guidance", "station_guidance:T:0:1")])
    assert ages["station_guidance"] >= 0.3


def test_finished_batch_records_are_kept_for_batch_keep_s(redis_client):
    from stationflow.settings import Settings
    from workers.sweeper import SweeperThread

    settings = Settings.from_dict({"batch": {"keep_s": 5}})
    ctx = WorkerContext.from_settings(settings, redis_client)
    ctx.uploader = None
    assert SweeperThread(ctx).tracker.keep_ms == 5000
    ctx.algorithms = {**ctx.algorithms, "load_prediction": lambda s, i: None}
    _load_ready(ctx)
    _run(ctx, [PlannedRun(S, "load_prediction", "load_prediction:T:0:1")])
    key = ctx.tracker.keys.batch("load_prediction:T:0:1")
    assert redis_client.hget(key, "state") == b"skipped"
    assert 0 < redis_client.pttl(key) <= 5000


def test_rate_limited_triggers_run_once_more_on_the_newest_data(redis_client):
    """min_interval_s: the first trigger after a run is deferred (its batch expects the
    station), later ones are absorbed; the trailing run, released when the interval ends,
    reads the newest windows and reports to the deferred batch."""
    from workers.scheduling import release_deferred

    seen = []

    def newest_hour(station, inp):
        seen.append(inp["topics"]["station_realtime_data"]["sendTime"][-1])
        return {"hour": seen[-1]}

    cat = Catalogue.build(module_overrides={"load_prediction": {"min_interval_s": 10}})
    ctx = _ctx(redis_client, cat, load_prediction=newest_hour)
    _load_ready(ctx)
    t0 = int(time.time() * 1000)

    def hour(h: int, offset: int) -> None:
        _write(ctx, "station_realtime_data", {"realTimeData": [
            {"stationId": S, "sendTime": f"2025-11-19 {h:02d}:00:00", "outputPowerPerStationAvg": 1.0,
             "gunPower": {"gunNo": ["01"], "outputPowerPerGunAvg": [1.0], "outputPowerPerGunMax": [2.0]}}]}, offset)

    def trigger(n: int, at: int):
        return schedule(redis_client, cat, [PlannedRun(S, "load_prediction", f"load_prediction:T:0:{n}")], now_ms=at)

    first = trigger(1, t0)
    jobs.execute(ctx, S, first.enqueued[0], now_ms=t0 + 10)
    hour(9, 10)
    second = trigger(2, t0 + 1000)
    hour(10, 11)
    third = trigger(3, t0 + 2000)
    assert second.deferred == {"load_prediction": 1} and third.rate_limited == {"load_prediction": 1}
    assert not second.enqueued and not third.enqueued and seen == ["2025-11-19 08:00:00"]
    tr = BatchTracker(redis_client)
    assert json.loads(tr.get("load_prediction:T:0:2")["expected"]) == [S]
    assert not tr.get("load_prediction:T:0:3")  # absorbed: no batch waits for the station
    rel = release_deferred(redis_client, cat, now_ms=t0 + 10_000)
    summary = jobs.execute(ctx, S, rel.enqueued[0], now_ms=t0 + 10_001)
    assert [r.outcome for r in summary.runs] == ["ok"] and summary.runs[0].batches == ["load_prediction:T:0:2"]
    assert seen == ["2025-11-19 08:00:00", "2025-11-19 10:00:00"]  # once more, on the newest hour
    assert tr.get("load_prediction:T:0:2")["state"] in ("uploading", "uploaded")
    assert not ctx.pending.deferred(S).get("load_prediction") and ctx.pending.next_deferred() is None
