"""Reference algorithms and the algorithm loader."""

from __future__ import annotations

import json

import orjson
import pytest
from samplefiles import SAMPLES

from parsers import fees
from parsers.catalogue import Catalogue, default_catalogue
from parsers.inputs import build_input, price_records
from workers import reference
from workers.algorithms import AlgorithmImportError, is_async, load_all, resolve

NOW = 1_763_524_800_000


def test_every_module_runs_on_empty_input_and_returns_json():
    cat = default_catalogue()
    for name, fn in load_all(cat).items():
        out = fn("S1", build_input(cat, name, "S1", {}, NOW))
        assert isinstance(out, dict)
        assert orjson.loads(orjson.dumps(out)) is not None
        assert fn("S1", build_input(cat, name, "S1", {}, NOW)) == out  # deterministic


def test_slot_prices_follow_fee_codes():
    fee = json.loads((SAMPLES / "SCHEDULE-CAR-PRICE.json").read_text())["fee"]
    recs = price_records([fee[0]])
    prices = reference.slot_prices(recs)
    code = recs[0]["feeNo"][0]
    cls = fees.FEE_CODES[code]
    assert prices[0] == pytest.approx(fee[0][f"{cls}ElectricFee"] + fee[0][f"{cls}ServerFee"])
    assert len(prices) == 48


def test_pv_prediction_scales_by_weather():
    pv = json.loads((SAMPLES / "SCHEDULE-DEVICE-PV.json").read_text())
    inp = {"topics": {"device_pv": pv, "environment_weather": {"weatherSituationTomorrow": "light rain"}}}
    out = reference.pv_prediction("S1", inp)
    assert out["weather_factor"] == 0.4
    assert out["prediction"][11] == round(pv["pvPreDcPower"][11] * 0.4, 4)


def test_load_prediction_means_by_hour_of_day():
    rt = {"sendTime": ["2025-11-18 09:00:00", "2025-11-19 08:00:00", "2025-11-19 09:00:00"],
          "filled": [False, False, False], "outputPowerPerStationAvg": [10.0, 30.0, 20.0]}
    out = reference.load_prediction("S1", {"topics": {"station_realtime_data": rt}})
    assert out["start_hour"] == 10
    assert out["prediction"][(9 - 10) % 24] == 15.0 and out["prediction"][(8 - 10) % 24] == 30.0


def test_resolve_paths_and_errors():
    assert resolve("workers.reference:pv_prediction") is reference.pv_prediction
    assert resolve("workers.reference.SOH_model") is reference.SOH_model
    with pytest.raises(AlgorithmImportError, match="no_such_pkg"):
        resolve("no_such_pkg.mod:fn", "load_prediction")
    with pytest.raises(AlgorithmImportError, match="missing"):
        resolve("workers.reference:missing", "load_prediction")
    with pytest.raises(AlgorithmImportError, match="module SOH_model"):
        load_all(Catalogue.build(module_overrides={"SOH_model": {"algorithm": "workers.reference:nope"}}))

    async def a(s, i):
        return 1

    assert is_async(a) and not is_async(reference.pv_prediction)
