"""The example packages, tested the way an algorithm author would: stationflow.testing, no
servers. Includes the migration path: a d_a-style callback reading flat keys."""

from __future__ import annotations

import pytest

from examples.migration import app as migration_app
from examples.migration.legacy import process_station
from examples.station_app import algorithms
from examples.station_app import app as station_app
from stationflow.testing import run_algorithm, sample_input

pytestmark = pytest.mark.unit

NOW = 1_763_550_000_000
S_GRID = "1881540927845654529"


def test_forecast_load_skips_filled_hours() -> None:
    run = run_algorithm(algorithms.forecast_load, "load_prediction", station_id=S_GRID, now_ms=NOW)
    assert run.ok
    # hours 08, 09, 11 had data (55.95, 0.0 - no station total that hour -, 140.5); 10 was filled
    assert run.result == {"station_id": S_GRID, "model": "example-v1", "next_hour_kw": round((55.95 + 140.5) / 3, 3),
                          "based_on_hours": 3, "last_hour": "2025-11-19 11:00:00", "guns": 4}


def test_forecast_load_without_data_has_no_output() -> None:
    inp = sample_input("load_prediction", S_GRID, now_ms=NOW)
    grid = inp["topics"]["station_realtime_data"]
    grid["filled"] = [True] * len(grid["filled"])
    assert run_algorithm(algorithms.forecast_load, "load_prediction", inp).outcome == "none"


def test_async_price_signal_reads_fee_classes_and_deps() -> None:
    run = run_algorithm(algorithms.price_signal, "electricity_price", now_ms=NOW)
    assert run.ok, run.error
    r = run.result
    assert r["slots_by_class"] == {"ebb": 16, "flat": 18, "peak": 8, "sharp": 6}
    assert sum(r["slots_by_class"].values()) == 48
    assert r["cheapest_class"] == "ebb" and r["meter_limit_kw"] == 630.0
    assert "mean_power_kw" in r["evaluation_keys"]  # the reference evaluation_model output, as a dep


def test_example_apps_register_what_they_say() -> None:
    regs = station_app.app.registrations
    assert {m: r.path for m, r in regs.items()} == {
        "load_prediction": "examples.station_app.algorithms:forecast_load",
        "electricity_price": "examples.station_app.algorithms:price_signal",
    }
    assert regs["electricity_price"].is_async and regs["electricity_price"].options == {"run_timeout_s": 10}
    assert station_app.app.hooks == {"result_handler": "examples.station_app.hooks:log_result",
                                     "batch_upload_handler": "examples.station_app.hooks:log_batch"}
    lp = migration_app.app.registrations["load_prediction"]
    assert (lp.path, lp.options) == ("examples.migration.legacy:process_station", {"layout": "flat"})


# ---- migration: a reference-style callback, unchanged, on the flat layout ---------------------

def test_reference_style_callback_runs_unchanged_on_the_flat_layout() -> None:
    inp = sample_input("load_prediction", S_GRID, layout="flat", now_ms=NOW)
    # the keys d_a callbacks read, at the top level as in the reference
    assert inp["outputPowerPerGunAvg"][-1] == [34.29, 88.48, 2.73, 15.0]
    assert inp["gunNo"] == ["03", "01", "02", "04"] and inp["gridCapacity"] == 800.0
    run = run_algorithm(process_station, "load_prediction", inp)
    assert run.ok
    # the callback added no station_id: stationflow did, and nothing was overwritten
    assert not run.station_id_mismatch and not run.wrapped
    assert run.result == {"station_id": S_GRID, "last_hour": "2025-11-19 11:00:00",
                          "total_gun_power": round(34.29 + 88.48 + 2.73 + 15.0, 3), "peak_gun": "01",
                          "grid_capacity": 800.0, "holidays_known": 1}


def test_the_same_callback_on_the_namespaced_layout_finds_nothing() -> None:
    # why `layout="flat"` is needed for unchanged code: the keys live under "topics" by default
    run = run_algorithm(process_station, "load_prediction", station_id=S_GRID, now_ms=NOW)
    assert run.outcome == "none"
