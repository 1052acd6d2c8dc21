"""Workers end to end: real redis-server, real broker, RQ worker (StationWorker) in burst mode; each
case runs on one Redis and again with the state on the Redis Cluster and the RQ queue on the
plain Redis (queue.redis_url).

Windows are written with the real parsers and store, runs are planned with the ingester's
planner and scheduled with `workers.scheduling.schedule`, exactly as the ingester does.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
import time

import orjson
import pytest
from kafkautil import consume_all, create_topics, unique_catalogue
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from samplefiles import SAMPLES

from ingest.triggers import plan_runs
from parsers.envelopes import parse_message
from parsers.records import Source
from workers import context as wctx
from workers import jobs, reference
from workers.context import WorkerContext
from workers.rqworker import StationWorker
from workers.scheduling import DEFAULT_GROUP_SIZE, ScheduleOptions, schedule
from workers.sweeper import sweep

pytestmark = [pytest.mark.heavy(65)]


HOUR = "2025-11-19 {:02d}:00:00"
S = ["1000000000000000001", "1000000000000000002", "1000000000000000003"]
PRODUCER = {"acks": "all", "linger_ms": 0}


class Pipeline:
    """One isolated deployment: its own topic names, Redis (flushed), context and queue."""

    def __init__(self, r, bootstrap: str, algorithms=None, qr=None) -> None:
        self.r = r
        self.qr = r if qr is None else qr  # the Redis of the RQ queue
        self.bootstrap = bootstrap
        self.cat = unique_catalogue()
        create_topics(bootstrap, [t.topic for t in self.cat.output_topics], partitions=1)
        self.ctx = WorkerContext.build(r, self.cat, producer_config={"bootstrap_servers": bootstrap, **PRODUCER},
                                       algorithms=algorithms, queue_r=qr)
        wctx.install(self.ctx)
        self.offset = 0
        self.ts = int(time.time() * 1000) - 10_000

    def write(self, alias: str, value: dict | list, partition: int = 0) -> list:
        """Parse and apply one message; returns the store's triggers."""
        spec = self.cat.topic(alias)
        parsed = parse_message(spec, orjson.dumps(value))
        assert not parsed.rejections
        self.offset += 1
        self.ts += 1
        src = Source(spec.topic, partition, self.offset, self.ts)
        return self.ctx.store.apply([(src, parsed.records)], int(time.time() * 1000)).triggers

    def schedule(self, triggers: list, group_size: int = DEFAULT_GROUP_SIZE):
        plan = plan_runs(triggers, self.cat, self.ctx.store.present, self.ctx.store.stations)
        return plan, schedule(self.r, self.cat, plan.runs, ScheduleOptions(queue_r=self.qr, group_size=group_size))

    def work(self) -> None:
        q = Queue("stationflow", connection=self.qr, serializer=JSONSerializer)
        StationWorker([q], connection=self.qr, serializer=JSONSerializer).work(burst=True)

    def envelopes(self, module: str, min_count: int, timeout_s: float = 10.0) -> list[dict]:
        topic = self.cat.by_module[module].output_topic
        recs = consume_all(self.bootstrap, topic, min_count, timeout_s=timeout_s)
        out = []
        for rec in recs:
            env = json.loads(rec.value)
            assert rec.key.decode() == env["batch_id"]
            out.append(env)
        return out


def realtime(stations, hours=range(6, 10)) -> dict:
    return {"realTimeData": [
        {"stationId": s, "hostCode": "52000000000088", "sendTime": HOUR.format(h),
         "gunPower": {"gunNo": ["01", "02"], "outputPowerPerGunAvg": [10.0 * i + h, 5.0],
                      "outputPowerPerGunMax": [60.0, 30.0]},
         "outputPowerPerStationAvg": 10.0 * i + h + 5.0, "outputPowerPerStationMax": 90.0}
        for i, s in enumerate(stations) for h in hours]}


def base_windows(p: Pipeline, stations) -> None:
    """station_param + calendar: with realtime, load_prediction and SOH_model become ready."""
    param = json.loads((SAMPLES / "SCHEDULE-STATION-PARAM.json").read_text())[0]
    p.write("station_param", [{**param, "stationId": s} for s in stations])
    p.write("environment_calendar", json.loads((SAMPLES / "SCHEDULE-ENVIRONMENT-CALENDAR.json").read_text()))


@pytest.fixture(params=["single", "cluster"])
def pipeline(request, redis_client, kafka_bootstrap):
    made = []
    if request.param == "cluster":
        r, qr = request.getfixturevalue("cluster_client"), redis_client
    else:
        r, qr = redis_client, None

    def make(algorithms=None) -> Pipeline:
        p = Pipeline(r, kafka_bootstrap, algorithms, qr=qr)
        made.append(p)
        return p

    yield make
    for p in made:
        p.ctx.uploader.close()
    wctx.install(None)


def test_one_realtime_message_gives_one_envelope_per_module_with_every_station(pipeline):
    p = pipeline()
    base_windows(p, S)
    plan, res = p.schedule(p.write("station_realtime_data", realtime(S)))
    assert sorted({r.module for r in plan.runs}) == ["SOH_model", "load_prediction"]
    assert len(res.enqueued) == 1 and res.batches_created == 2  # the three stations in one group job
    p.work()
    for module in ("load_prediction", "SOH_model"):
        envs = p.envelopes(module, 1)
        assert len(envs) == 1
        env = envs[0]
        assert env["module"] == module and env["stations_count"] == 3
        assert [x["station_id"] for x in env["results"]] == S
        assert env["batch_id"] == f"{module}:{p.cat.topic('station_realtime_data').topic}:0:{p.offset}"
    lp = p.envelopes("load_prediction", 1)[0]["results"]
    # the reference load prediction: the mean of the stored hours at that hour of day
    # (one hour each here, so the observed station average)
    by_station = {x["station_id"]: x for x in lp}
    assert by_station[S[1]]["prediction"][(6 - 10) % 24] == 10.0 * 1 + 6 + 5.0
    b = p.ctx.tracker.get(next(r.batch_id for r in plan.runs if r.module == "load_prediction"))
    assert b["state"] == "uploaded" and b["ok"] == "3" and b.get("timed_out") == "0"


def test_failing_station_is_left_out_and_batch_uploads_on_completion(pipeline):
    def flaky(station, inp):
        if station == S[1]:
            raise RuntimeError("model crashed")
        return reference.load_prediction(station, inp)

    p = pipeline({"load_prediction": flaky})
    base_windows(p, S)
    plan, _ = p.schedule(p.write("station_realtime_data", realtime(S)))
    batch = next(r.batch_id for r in plan.runs if r.module == "load_prediction")
    p.work()
    b = p.ctx.tracker.get(batch)
    assert b["state"] == "uploaded" and b["ok"] == "2" and b["failed"] == "1" and b["f:exception"] == "1"
    assert int(b["completed"]) < int(b["deadline"])  # on completion, not at the timeout
    env = p.envelopes("load_prediction", 1)[0]
    assert env["stations_count"] == 2 and [x["station_id"] for x in env["results"]] == [S[0], S[2]]


def test_station_whose_job_never_runs_times_out_and_others_upload_once(pipeline):
    p = pipeline()
    base_windows(p, S)
    plan, res = p.schedule(p.write("station_realtime_data", realtime(S)), group_size=1)
    q = Queue("stationflow", connection=p.qr, serializer=JSONSerializer)
    lost = next(j for j in q.jobs if j.args[0] == [S[2]])
    q.remove(lost)
    p.work()
    batch = next(r.batch_id for r in plan.runs if r.module == "load_prediction")
    assert p.ctx.tracker.get(batch)["state"] == "open"
    deadline = int(p.ctx.tracker.get(batch)["deadline"])
    first = sweep(p.ctx, now_ms=deadline + 1)
    again = sweep(p.ctx, now_ms=deadline + 2)
    assert first.claimed == 2 and first.uploaded == 2 and not again
    b = p.ctx.tracker.get(batch)
    assert b["state"] == "uploaded" and b["timed_out"] == "1" and b["expired"] == "1"
    p.envelopes("load_prediction", 1)
    envs = p.envelopes("load_prediction", 2, timeout_s=2)  # a second one would show up here
    assert len(envs) == 1 and [x["station_id"] for x in envs[0]["results"]] == S[:2]


def _full_station(p: Pipeline, s: str) -> None:
    base_windows(p, [s])
    p.write("station_realtime_data", realtime([s]))
    fee = json.loads((SAMPLES / "SCHEDULE-CAR-PRICE.json").read_text())
    p.write("car_price", {"fee": [{**f, "stationId": s} for f in fee["fee"]]})
    for alias, name in (("device_host_dcdc", "SCHEDULE-DEVICE-HOST-DCDC"), ("device_host_acdc", "SCHEDULE-DEVICE-HOST-ACDC"),
                        ("device_storage", "SCHEDULE-DEVICE-STORAGE")):
        p.write(alias, {**json.loads((SAMPLES / f"{name}.json").read_text()), "stationId": s})


def test_cascade_runs_in_order_in_one_job_with_fresh_outputs(pipeline):
    calls: list[tuple[str, dict]] = []

    def recording(name):
        fn = getattr(reference, name)

        def run(station, inp):
            calls.append((name, inp))
            return fn(station, inp)
        return run

    names = ["load_prediction", "pv_prediction", "operation_optimization", "thermal_management",
             "evaluation_model", "SOH_model", "electricity_price", "station_guidance"]
    p = pipeline({n: recording(n) for n in names})
    s = S[0]
    _full_station(p, s)
    trig = p.write("device_pv", {**json.loads((SAMPLES / "SCHEDULE-DEVICE-PV.json").read_text()), "stationId": s})
    weather = json.loads((SAMPLES / "SCHEDULE-ENVIRONMENT-WEATHER.json").read_text())
    trig += p.write("environment_weather", {"weather": [{**weather["weather"][0], "stationId": s}]})
    trig += p.write("station_realtime_data", realtime([s], hours=[10]))
    plan, res = p.schedule(trig)
    planned = [r.module for r in plan.runs]
    assert {"pv_prediction", "operation_optimization", "thermal_management", "load_prediction"} <= set(planned)
    assert len(res.enqueued) == 1  # every module of the station in one job
    p.work()
    order = [n for n, _ in calls]
    assert order.index("pv_prediction") < order.index("operation_optimization") < order.index("thermal_management")
    assert order.index("load_prediction") < order.index("thermal_management")
    assert order.count("thermal_management") == 1
    tm_input = dict(calls)["thermal_management"]
    oo_stored = p.ctx.store.read_output(s, "operation_optimization")[0]
    lp_stored = p.ctx.store.read_output(s, "load_prediction")[0]
    assert tm_input["deps"]["operation_optimization"] == oo_stored["payload"]
    assert tm_input["deps"]["load_prediction"] == lp_stored["payload"]
    pv_stored = p.ctx.store.read_output(s, "pv_prediction")[0]["payload"]
    assert dict(calls)["operation_optimization"]["deps"]["pv_prediction"] == pv_stored
    assert pv_stored["weather_factor"] == 0.4  # "light rain"


def test_twenty_workers_racing_on_one_batch_upload_it_once(pipeline):
    p = pipeline()
    stations = [f"20000000000000000{i:02d}" for i in range(20)]
    base_windows(p, stations)
    plan, res = p.schedule(p.write("station_realtime_data", realtime(stations, hours=[8])))
    assert len(res.enqueued) == 2  # groups of 16 (the threads below take the runs themselves)
    barrier = threading.Barrier(20)
    errors = []

    def worker(station):
        try:
            barrier.wait()
            jobs.execute(p.ctx, station, f"race-{station}")
            sweep(p.ctx)
        except Exception as e:  # pragma: no cover - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in stations]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for module in ("load_prediction", "SOH_model"):
        p.envelopes(module, 1)
        envs = p.envelopes(module, 2, timeout_s=2)
        assert len(envs) == 1 and envs[0]["stations_count"] == 20
    counters = p.ctx.tracker.counters()
    assert counters["uploaded"] == 2 and counters["created"] == 2


def test_late_result_is_stored_but_not_uploaded_again(pipeline):
    p = pipeline()
    base_windows(p, S)
    plan, res = p.schedule(p.write("station_realtime_data", realtime(S)))
    batch = next(r.batch_id for r in plan.runs if r.module == "load_prediction")
    jobs.execute(p.ctx, S[0], "j0")
    jobs.execute(p.ctx, S[1], "j1")
    deadline = int(p.ctx.tracker.get(batch)["deadline"])
    assert sweep(p.ctx, now_ms=deadline + 1).uploaded == 2
    late = jobs.execute(p.ctx, S[2], "j2")
    assert late.statuses["late"] == 2 and late.uploaded == []
    b = p.ctx.tracker.get(batch)
    assert b["late"] == "1" and b["state"] == "uploaded"
    assert p.ctx.store.read_output(S[2], "load_prediction")[0]["payload"]["station_id"] == S[2]
    p.envelopes("load_prediction", 1)
    envs = p.envelopes("load_prediction", 2, timeout_s=2)
    assert len(envs) == 1 and envs[0]["stations_count"] == 2


def test_pickle_job_planted_by_hand_is_refused(pipeline, tmp_path):
    p = pipeline()
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    job_id = "st-evil-0000"
    payload = pickle.dumps(("workers.jobs.run_station", None, (Evil(),), {}))
    p.qr.hset(Job.key_for(job_id), mapping={"data": payload, "status": "queued", "origin": "stationflow",
                                           "created_at": "2025-11-19T00:00:00.000000Z",
                                           "description": "planted"})
    p.qr.rpush("rq:queue:stationflow", job_id)
    p.qr.sadd("rq:queues", "rq:queue:stationflow")
    p.work()
    assert not marker.exists()
    assert p.qr.hget(Job.key_for(job_id), "status") in (b"failed", None)


def test_background_upload_job_returns_before_the_ack_and_the_thread_marks_uploaded(pipeline):
    p = pipeline()
    p.ctx.background_upload = True
    base_windows(p, S)
    plan, _ = p.schedule(p.write("station_realtime_data", realtime(S)))
    p.work()
    assert p.ctx.uploader.flush(20.0) and p.ctx.uploader.queued == 0
    for module in ("load_prediction", "SOH_model"):
        batch = next(r.batch_id for r in plan.runs if r.module == module)
        b = p.ctx.tracker.get(batch)
        assert b["state"] == "uploaded" and b["ok"] == "3"
        envs = p.envelopes(module, 1)
        assert [e["batch_id"] for e in envs] == [batch] and envs[0]["stations_count"] == 3
    assert p.envelopes("load_prediction", 2, timeout_s=2) == p.envelopes("load_prediction", 1)  # exactly one


def test_background_upload_leaves_a_batch_that_waited_too_long_to_the_sweeper(pipeline):
    p = pipeline()
    p.ctx.background_upload = True
    p.ctx.tracker.reclaim_after_ms = 0  # every queued batch counts as waiting too long
    base_windows(p, S)
    plan, _ = p.schedule(p.write("station_realtime_data", realtime(S)))
    p.work()
    assert p.ctx.uploader.flush(20.0)
    batch = next(r.batch_id for r in plan.runs if r.module == "load_prediction")
    assert p.ctx.tracker.get(batch)["state"] == "uploading"  # not sent by the thread
    assert p.envelopes("load_prediction", 1, timeout_s=2) == []
    swept = sweep(p.ctx, now_ms=int(time.time() * 1000) + 1)  # the re-claim sends it, once
    assert swept.uploaded == 2
    assert p.ctx.tracker.get(batch)["state"] == "uploaded"
    assert [e["batch_id"] for e in p.envelopes("load_prediction", 1)] == [batch]
