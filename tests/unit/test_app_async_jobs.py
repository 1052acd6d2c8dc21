"""`async def` algorithms in the real station job (workers.jobs.execute): awaited to
completion with the same timeout and failure rules as plain functions; the batch uploads
only the ok station. Redis is fakeredis with Lua; the Kafka producer is a recording fake."""

from __future__ import annotations

import asyncio
import json
import time

import orjson
import pytest

from ingest.triggers import plan_runs
from parsers.catalogue import Catalogue
from parsers.envelopes import parse_message
from parsers.records import Source
from stationflow.testing import sample_messages
from workers import context as wctx
from workers import jobs
from workers.context import WorkerContext
from workers.scheduling import schedule

pytestmark = pytest.mark.unit

OK, RAISES, HANGS = "4000000000000000001", "4000000000000000002", "4000000000000000003"


async def forecast(station_id: str, module_input: dict) -> dict:
    await asyncio.sleep(0)
    if station_id == RAISES:
        raise RuntimeError("model file missing")
    if station_id == HANGS:
        await asyncio.sleep(6.0)
    return {"hours": len(module_input["topics"]["station_realtime_data"]["sendTime"])}


class _Sent:
    def get(self, timeout: float | None = None) -> None:
        return None


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict]] = []

    def send(self, topic: str, key: bytes, value: bytes) -> _Sent:
        self.sent.append((topic, key, json.loads(value)))
        return _Sent()

    def close(self, timeout: float | None = None) -> None:
        pass


def _write(ctx: WorkerContext, cat: Catalogue, now: int) -> list:
    """Station param, calendar and one realtime hour for the three stations (samples' shapes)."""
    param = json.loads(sample_messages()["SCHEDULE-STATION-PARAM"])[0]
    values = [
        ("station_param", [{**param, "stationId": s} for s in (OK, RAISES, HANGS)]),
        ("environment_calendar", json.loads(sample_messages()["SCHEDULE-ENVIRONMENT-CALENDAR"])),
        ("station_realtime_data", {"realTimeData": [
            {"stationId": s, "sendTime": "2025-11-19 08:00:00", "outputPowerPerStationAvg": 40.0,
             "gunPower": {"gunNo": ["01"], "outputPowerPerGunAvg": [40.0], "outputPowerPerGunMax": [80.0]}}
            for s in (OK, RAISES, HANGS)]}),
    ]
    triggers = []
    for offset, (alias, value) in enumerate(values):
        spec = cat.topic(alias)
        msg = (Source(spec.topic, 0, offset, now - 1000), parse_message(spec, orjson.dumps(value)).records)
        triggers = ctx.store.apply([msg], now).triggers
    return triggers  # the realtime message's


def test_async_algorithm_ok_exception_and_timeout_in_the_station_job(fake_redis) -> None:
    cat = Catalogue.build(module_overrides={"load_prediction": {"run_timeout_s": 1.5}})
    producer = RecordingProducer()
    ctx = WorkerContext.build(fake_redis, cat, producer=producer, algorithms={"load_prediction": forecast})
    wctx.install(ctx)
    try:
        now = int(time.time() * 1000)
        triggers = _write(ctx, cat, now)
        plan = plan_runs(triggers, cat, ctx.store.present, ctx.store.stations,
                         modules=("load_prediction",))
        runs = [r for r in plan.runs if r.module == "load_prediction"]
        assert sorted(r.station for r in runs) == [OK, RAISES, HANGS]
        schedule(fake_redis, cat, runs)
        batch = runs[0].batch_id
        outcomes = {s: jobs.execute(ctx, s, f"job-{s}").runs for s in (OK, RAISES, HANGS)}
    finally:
        wctx.install(None)
    got = {s: [(r.module, r.outcome, r.reason) for r in rs] for s, rs in outcomes.items()}
    assert got == {OK: [("load_prediction", "ok", None)],
                   RAISES: [("load_prediction", "failed", "exception")],
                   HANGS: [("load_prediction", "failed", "timeout")]}
    assert outcomes[HANGS][0].seconds < 4.5  # the job stopped waiting at run_timeout_s (not 6 s)
    # every station reported, so the batch completed at once and only the ok result is uploaded
    assert len(producer.sent) == 1
    topic, key, env = producer.sent[0]
    assert topic == cat.by_module["load_prediction"].output_topic and key.decode() == batch
    assert env["stations_count"] == 1
    assert env["results"] == [{"station_id": OK, "hours": 168}]
    stored = ctx.store.read_output(OK, "load_prediction")
    assert stored[0]["payload"] == {"station_id": OK, "hours": 168}
    assert ctx.store.read_output(RAISES, "load_prediction") == []
