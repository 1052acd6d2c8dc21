"""Hooks may be `async def`: given by path in `[hooks]`, by environment, or registered with
`App.on_result` / `App.on_batch`, they are awaited by the worker (never a coroutine left
un-awaited)."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
import warnings

import pytest
from samplefiles import SAMPLES

from stationflow.settings import Settings
from workers import jobs
from workers.context import WorkerContext
from workers.scheduling import PlannedRun, schedule

S = "4000000000000000077"

HOOKS = '''
import asyncio

calls = []


async def on_result(station_id, module_input, result):
    await asyncio.sleep(0)
    calls.append(("result", station_id, result["n"]))


async def on_batch(batch_id, results):
    await asyncio.sleep(0)
    calls.append(("batch", batch_id, [r["n"] for r in results]))


def plain_returning_a_coroutine(batch_id, results):
    return on_batch(batch_id, results)
'''


class _Sent:
    def get(self, timeout=None):
        return None


class _Producer:
    """Stands in for Kafka: the point here is the hook after the upload, not the send."""

    def __init__(self):
        self.sent = []

    def send(self, topic, key=None, value=None):
        self.sent.append((topic, key))
        return _Sent()


@pytest.fixture
def hooks_module(tmp_path, monkeypatch):
    name = f"asynchooks_{time.monotonic_ns()}"
    (tmp_path / f"{name}.py").write_text(HOOKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def _ready(ctx: WorkerContext) -> None:
    from parsers.envelopes import parse_message
    from parsers.records import Source

    now = int(time.time() * 1000)
    param = json.loads((SAMPLES / "SCHEDULE-STATION-PARAM.json").read_text())[0]
    values = [("station_param", [{**param, "stationId": S}]),
              ("environment_calendar", json.loads((SAMPLES / "SCHEDULE-ENVIRONMENT-CALENDAR.json").read_text())),
              ("station_realtime_data", {"realTimeData": [
                  {"stationId": S, "sendTime": "2025-11-19 08:00:00", "outputPowerPerStationAvg": 42.0,
                   "gunPower": {"gunNo": ["01"], "outputPowerPerGunAvg": [42.0], "outputPowerPerGunMax": [80.0]}}]})]
    for i, (alias, value) in enumerate(values):
        spec = ctx.catalogue.topic(alias)
        ctx.store.apply([(Source(spec.topic, 0, i, now - 1000),
                          parse_message(spec, json.dumps(value).encode()).records)], now)


def _run_one(settings: Settings, redis_client) -> WorkerContext:
    ctx = WorkerContext.from_settings(settings, redis_client)
    ctx.uploader._producer = _Producer()
    ctx.algorithms = {**ctx.algorithms, "load_prediction": lambda s, i: {"n": 7}}
    _ready(ctx)
    schedule(redis_client, ctx.catalogue, [PlannedRun(S, "load_prediction", "load_prediction:T:0:1")])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... was never awaited"
        summary = jobs.execute(ctx, S, "job-h")
        gc.collect()
    assert summary.uploaded == ["load_prediction:T:0:1"]
    return ctx


@pytest.mark.parametrize("how", ["file", "env"])
def test_async_hooks_by_path_are_awaited(redis_client, hooks_module, how):
    paths = {"result_handler": f"{hooks_module}:on_result", "batch_upload_handler": f"{hooks_module}:on_batch"}
    if how == "file":
        settings = Settings.from_dict({"hooks": paths})
    else:
        settings = Settings.load(None, env={"STATIONFLOW_HOOKS_RESULT_HANDLER": paths["result_handler"],
                                            "STATIONFLOW_HOOKS_BATCH_UPLOAD_HANDLER": paths["batch_upload_handler"]})
    _run_one(settings, redis_client)
    assert sys.modules[hooks_module].calls == [("result", S, 7), ("batch", "load_prediction:T:0:1", [7])]


def test_a_plain_hook_returning_a_coroutine_is_awaited_too(redis_client, hooks_module):
    settings = Settings.from_dict({"hooks": {"batch_upload_handler": f"{hooks_module}:plain_returning_a_coroutine"}})
    _run_one(settings, redis_client)
    assert sys.modules[hooks_module].calls == [("batch", "load_prediction:T:0:1", [7])]


def test_async_hooks_registered_with_the_app_are_awaited(redis_client, hooks_module):
    from stationflow.app import App

    mod = __import__(hooks_module)
    app = App()
    app.on_result(mod.on_result)
    app.on_batch(mod.on_batch)
    _run_one(app.settings, redis_client)
    assert mod.calls == [("result", S, 7), ("batch", "load_prediction:T:0:1", [7])]


def test_an_async_hook_works_from_a_thread_that_runs_an_event_loop(redis_client, hooks_module):
    settings = Settings.from_dict({"hooks": {"result_handler": f"{hooks_module}:on_result"}})

    async def inside_a_loop():
        return _run_one(settings, redis_client)

    asyncio.run(inside_a_loop())
    assert sys.modules[hooks_module].calls == [("result", S, 7)]
