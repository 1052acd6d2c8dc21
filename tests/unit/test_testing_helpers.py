"""stationflow.testing: module inputs from the bundled samples and worker-equivalent runs."""

from __future__ import annotations

import asyncio
import math
import time

import orjson
import pytest
from samplefiles import SAMPLES

from parsers.catalogue import default_catalogue
from stationflow.settings import Settings
from stationflow.testing import (
    SampleError,
    run_algorithm,
    sample_input,
    sample_messages,
    sample_stations,
    sample_windows,
)
from workers import reference

pytestmark = pytest.mark.unit

NOW = 1_763_550_000_000  # 2025-11-19 11:00 UTC: fixed, so ages are exact
S_GRID = "1881540927845654529"  # realtime hours 08, 09, 11; dcdc/acdc devices
S_ORDERS = "1173980655843938304"  # realtime 09-11, a car order, prices
S_DEVICES = "1053405539402387456"  # meter, gun, error, pv, storage; no realtime


def test_bundled_samples_cover_every_input_topic() -> None:
    shipped = sample_messages()
    cat = default_catalogue()
    assert set(shipped) == {t.topic for t in cat.input_topics} | {"MODULE-OUTPUT-LOAD_PREDICTION"}
    for topic, raw in shipped.items():
        assert raw == (SAMPLES / f"{topic}.json").read_bytes(), topic  # the tests' copy is the package's
    assert sample_stations() == sorted([S_GRID, S_ORDERS, S_DEVICES])


@pytest.mark.parametrize("module", default_catalogue().order)
def test_every_module_gets_a_complete_namespaced_input(module: str) -> None:
    spec = default_catalogue().module(module)
    inp = sample_input(module, now_ms=NOW)
    assert inp["module"] == module
    assert set(inp["topics"]) == set(spec.inputs)
    assert set(inp["deps"]) == set(spec.deps)
    q = inp["_data_quality"]
    assert q["missing_topics"] == [] and q["stale"] == []
    assert q["available_topics"] == list(spec.all_inputs)
    assert q["availability_ratio"] == 1.0
    assert all(v == 1.0 for k, v in q["age_s"].items() if k in spec.inputs)
    for dep in spec.deps:  # computed by the reference algorithm for this very station
        assert inp["deps"][dep]["station_id"] == inp["stationId"]
    orjson.dumps(inp)  # plain JSON, as a worker hands it over


def test_realtime_grid_of_one_station_matches_the_sample() -> None:
    inp = sample_input("load_prediction", S_GRID, now_ms=NOW)
    assert inp["stationId"] == S_GRID
    rt = inp["topics"]["station_realtime_data"]
    assert len(rt["sendTime"]) == 168
    assert rt["sendTime"][-4:] == ["2025-11-19 08:00:00", "2025-11-19 09:00:00", "2025-11-19 10:00:00",
                                   "2025-11-19 11:00:00"]
    assert rt["filled"][-4:] == [False, False, True, False]
    assert rt["gunNo"] == ["03", "01", "02", "04"]
    assert rt["outputPowerPerGunAvg"][-3] == [0.0, 41.37, 12.06, 0.0]
    assert rt["outputPowerPerStationAvg"][-1] == 140.5
    assert inp["topics"]["station_param"]["gridCapacity"] == 800.0
    assert [d["date"] for d in inp["topics"]["environment_calendar"]][:2] == ["2025-11-17", "2025-11-18"]


def test_composite_station_borrows_missing_inputs_with_its_own_id() -> None:
    station, windows = sample_windows(module="electricity_price", now_ms=NOW)
    assert station == S_DEVICES  # holds most of electricity_price's inputs
    # realtime is borrowed from another sample station, restamped with this station's id
    assert windows["station_realtime_data"]
    inp = sample_input("evaluation_model", now_ms=NOW)
    assert {d["stationId"] for d in inp["topics"]["device_host_dcdc"]} == {inp["stationId"]}
    orders = inp["topics"]["car_order"]["seconds"]
    assert len(orders) == 1 and orders[0]["late"] is False
    assert orders[0]["orders"][0]["transactionSerialNo"] == "5200000000063101190B130B370813F3"


def test_one_station_only_has_its_own_data() -> None:
    inp = sample_input("load_prediction", S_DEVICES, now_ms=NOW)
    assert inp["topics"]["station_realtime_data"] is None
    assert inp["_data_quality"]["missing_topics"] == ["station_realtime_data"]
    run = run_algorithm(reference.load_prediction, "load_prediction", station_id=S_DEVICES, now_ms=NOW)
    assert (run.outcome, run.reason) == ("failed", "not_ready")
    with pytest.raises(SampleError, match="sample stations: 1053405539402387456"):
        sample_input("load_prediction", "42", now_ms=NOW)


def test_age_makes_inputs_stale_and_devices_invisible() -> None:
    inp = sample_input("evaluation_model", S_GRID, now_ms=NOW, age_s=7201)
    q = inp["_data_quality"]
    assert "station_realtime_data" in q["stale"]  # older than its 2 h TTL, still present
    assert inp["topics"]["device_host_dcdc"] is None  # older than 60 s: not visible
    assert {"device_host_dcdc", "device_host_acdc"} <= set(q["missing_topics"])
    assert q["age_s"]["station_realtime_data"] == 7201.0


def test_flat_layout_has_the_reference_keys() -> None:
    inp = sample_input("load_prediction", S_GRID, layout="flat", now_ms=NOW)
    assert "topics" not in inp and inp["stationId"] == S_GRID
    assert inp["outputPowerPerStationAvg"][-1] == 140.5
    assert inp["gridCapacity"] == 800.0
    assert inp["date"][:2] == ["2025-11-17", "2025-11-18"]
    assert inp["_data_quality"]["collisions"] == []
    # the same through a deployment's settings
    s = Settings.from_dict({"modules": {"load_prediction": {"layout": "flat"}}})
    assert sample_input("load_prediction", S_GRID, settings=s, now_ms=NOW) == inp


def test_given_deps_replace_the_computed_ones() -> None:
    inp = sample_input("station_guidance", deps={"load_prediction": {"prediction": [1.0, 2.0]},
                                                 "evaluation_model": None}, now_ms=NOW)
    assert inp["deps"]["load_prediction"] == {"station_id": inp["stationId"], "prediction": [1.0, 2.0]}
    assert inp["deps"]["evaluation_model"] is None
    assert inp["_data_quality"]["missing_topics"] == ["evaluation_model"]
    with pytest.raises(SampleError, match="not its dependencies"):
        sample_input("station_guidance", deps={"SOH_model": {}}, now_ms=NOW)


# ---- run_algorithm -------------------------------------------------------------------------

def test_run_applies_the_worker_result_rules() -> None:
    run = run_algorithm(lambda s, i: {"station_id": "other", "x": math.nan, "n": len(i["topics"])},
                        "load_prediction", now_ms=NOW)
    assert run.ok and run.station_id_mismatch and run.nonfinite == 1
    assert run.result == {"station_id": run.station_id, "x": None, "n": 3}
    wrapped = run_algorithm(lambda s, i: [1, 2], "load_prediction", now_ms=NOW)
    assert wrapped.result == {"station_id": wrapped.station_id, "value": [1, 2]} and wrapped.wrapped
    assert run_algorithm(lambda s, i: None, "load_prediction", now_ms=NOW).outcome == "none"
    bad = run_algorithm(lambda s, i: {"x": {1, 2}}, "load_prediction", now_ms=NOW)
    assert (bad.outcome, bad.reason) == ("failed", "unserialisable")


def test_run_reports_exceptions_and_timeouts() -> None:
    def boom(station_id: str, module_input: dict) -> dict:
        raise KeyError("outputPowerPerGunAvg")

    run = run_algorithm(boom, "load_prediction", now_ms=NOW)
    assert (run.outcome, run.reason) == ("failed", "exception")
    assert isinstance(run.error, KeyError)

    def slow(station_id: str, module_input: dict) -> dict:
        time.sleep(0.5)
        return {}

    run = run_algorithm(slow, "load_prediction", timeout_s=0.05, now_ms=NOW)
    assert (run.outcome, run.reason) == ("failed", "timeout")


def test_async_algorithms_get_the_same_semantics() -> None:
    async def forecast(station_id: str, module_input: dict) -> dict:
        await asyncio.sleep(0)
        return {"hours": len(module_input["topics"]["station_realtime_data"]["sendTime"])}

    async def fails(station_id: str, module_input: dict) -> dict:
        await asyncio.sleep(0)
        raise RuntimeError("model file missing")

    async def hangs(station_id: str, module_input: dict) -> dict:
        await asyncio.sleep(0.5)
        return {}

    ok = run_algorithm(forecast, "load_prediction", now_ms=NOW)
    assert ok.result == {"station_id": ok.station_id, "hours": 168}
    failed = run_algorithm(fails, "load_prediction", now_ms=NOW)
    assert (failed.reason, str(failed.error)) == ("exception", "model file missing")
    late = run_algorithm(hangs, "load_prediction", timeout_s=0.05, now_ms=NOW)
    assert (late.outcome, late.reason) == ("failed", "timeout")
    # after a timeout the next run gets a fresh lane and succeeds
    assert run_algorithm(forecast, "load_prediction", now_ms=NOW).ok


def test_reference_algorithms_pass_on_every_module() -> None:
    for module in default_catalogue().order:
        run = run_algorithm(getattr(reference, module), module, now_ms=NOW)
        assert run.ok, (module, run.reason, run.error)
        assert run.result["station_id"] == run.input["stationId"]
