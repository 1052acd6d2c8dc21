"""build_input for all 9 modules: namespaced layout, _data_quality, deps, and the flat layout
with its collision record (spec §6.3). Windows are built from the real samples."""

from __future__ import annotations

import pytest
from samplefiles import SAMPLES

from parsers.catalogue import Catalogue, default_catalogue
from parsers.envelopes import parse_message
from parsers.inputs import build_input
from parsers.windows import apply_latest, make_item, upsert_device, upsert_global, upsert_hourly

pytestmark = pytest.mark.unit

CAT = default_catalogue()
S1 = "1053405539402387456"
S2 = "1173980655843938304"
S3 = "1881540927845654529"
T0 = 1_763_524_800_000  # record timestamps of the loaded samples
NOW = T0 + 5_000


def load_windows(cat: Catalogue = CAT, ts: int = T0) -> dict[str | None, dict]:
    """Every sample applied through the reference window functions: station -> name -> window."""
    stations: dict[str | None, dict] = {}
    for path in sorted(SAMPLES.glob("*.json")):
        spec = cat.topic(path.stem)
        for r in parse_message(spec, path.read_bytes()).records:
            w = stations.setdefault(r.station_id, {})
            item = make_item(ts, f"{spec.topic}:0:7", r.payload)
            if r.op == "latest":
                w[r.alias] = apply_latest(w.get(r.alias), item)
            elif r.op == "hourly":
                w[r.alias], _ = upsert_hourly(w.get(r.alias, {}), r.key, item, spec.window_size)
            elif r.op == "devices":
                w[r.alias] = upsert_device(w.get(r.alias, {}), r.key, item, spec.window_size)
            elif r.op == "global":
                w[r.alias], _ = upsert_global(w.get(r.alias, {}), r.key, item, spec.window_size)
            elif r.op == "orders":
                w[r.alias] = [{"seq": 1, "second": ts // 1000, "late": False, "orders": [item]}]
    return stations


def station_windows(station: str, stations: dict) -> dict:
    """A station's windows plus the global ones, as the store reader returns them."""
    return {**stations.get(None, {}), **stations.get(station, {})}


STATIONS = load_windows()


@pytest.mark.parametrize("module", CAT.order)
def test_every_module_gets_the_namespaced_shape(module: str) -> None:
    spec = CAT.module(module)
    x = build_input(CAT, module, S3, station_windows(S3, STATIONS), NOW)
    assert set(x) == {"stationId", "module", "topics", "deps", "_data_quality"}
    assert (x["stationId"], x["module"]) == (S3, module)
    assert list(x["topics"]) == list(spec.inputs)
    assert list(x["deps"]) == list(spec.deps)
    q = x["_data_quality"]
    assert q["total_topics"] == len(spec.inputs) + len(spec.deps)
    assert sorted(q["available_topics"] + q["missing_topics"]) == sorted(spec.all_inputs)
    for name in q["missing_topics"]:
        assert (x["topics"] | x["deps"])[name] is None
    for name in q["available_topics"]:
        assert (x["topics"] | x["deps"])[name] is not None
        assert q["age_s"][name] == 5.0
    expected = round(len(q["available_topics"]) / q["total_topics"], 3) if q["total_topics"] else 1.0
    assert q["availability_ratio"] == expected


def test_customer_mining_has_nothing_and_ratio_one() -> None:
    x = build_input(CAT, "customer_mining", S1, {}, NOW)
    assert x["topics"] == {} and x["deps"] == {}
    assert x["_data_quality"] == {"available_topics": [], "missing_topics": [], "total_topics": 0,
                                  "availability_ratio": 1.0, "age_s": {}, "stale": []}


def test_missing_inputs_are_null_and_listed() -> None:
    # S3 has realtime, dcdc, acdc (samples) but no price, storage, or dep outputs
    x = build_input(CAT, "thermal_management", S3, station_windows(S3, STATIONS), NOW)
    q = x["_data_quality"]
    assert q["available_topics"] == ["station_realtime_data", "device_host_dcdc", "device_host_acdc",
                                     "load_prediction"]
    assert q["missing_topics"] == ["car_price", "device_storage", "operation_optimization"]
    assert q["availability_ratio"] == 0.571
    assert x["topics"]["car_price"] is None and x["topics"]["device_storage"] is None
    assert x["deps"]["operation_optimization"] is None
    assert x["deps"]["load_prediction"]["station_id"] == S3  # the external output sample


def test_calendar_is_visible_to_every_station() -> None:
    for station in (S1, S2, S3, "brand-new-station"):
        x = build_input(CAT, "load_prediction", station, station_windows(station, STATIONS), NOW)
        cal = x["topics"]["environment_calendar"]
        assert [d["date"] for d in cal][:2] == ["2025-11-17", "2025-11-18"] and len(cal) == 15
        assert "environment_calendar" in x["_data_quality"]["available_topics"]


def test_deps_are_namespaced_and_never_collide() -> None:
    w = station_windows(S1, STATIONS)
    w["pv_prediction"] = make_item(T0, "x:0:1", {"station_id": S1, "prediction": [1.0], "timestamp": 1})
    w["evaluation_model"] = make_item(T0, "x:0:2", {"station_id": S1, "prediction": [2.0], "timestamp": 2})
    w["SOH_model"] = make_item(T0, "x:0:3", {"station_id": S1, "prediction": [3.0], "stationId": "evil"})
    x = build_input(CAT, "electricity_price", S1, w, NOW)
    assert x["stationId"] == S1
    assert [x["deps"][d]["prediction"] for d in ("pv_prediction", "evaluation_model", "SOH_model")] == [
        [1.0], [2.0], [3.0]]
    assert x["deps"]["SOH_model"]["stationId"] == "evil"  # kept inside its namespace only


def test_ages_and_stale_inputs() -> None:
    day = 86_400_000
    w = station_windows(S1, STATIONS)
    now = T0 + 41 * day  # price TTL is 40 days, param has none, realtime 2 h
    x = build_input(CAT, "electricity_price", S1, w, now)
    q = x["_data_quality"]
    assert q["age_s"]["car_price"] == 41 * 86_400.0
    assert "car_price" in q["stale"] and "station_param" not in q["stale"]
    assert "car_price" in q["available_topics"]  # stale still counts as present
    assert "device_meter" in q["stale"] and "environment_calendar" not in q["stale"]
    # a record from the future is age 0, not negative
    x = build_input(CAT, "electricity_price", S1, w, T0 - 1_000)
    assert x["_data_quality"]["age_s"]["station_param"] == 0.0


def test_devices_hidden_after_ttl_make_the_input_missing() -> None:
    w = station_windows(S3, STATIONS)
    x = build_input(CAT, "evaluation_model", S3, w, T0 + 61_000)
    assert x["topics"]["device_host_dcdc"] is None
    assert "device_host_dcdc" in x["_data_quality"]["missing_topics"]


def test_orders_none_is_missing_empty_list_is_present() -> None:
    w = station_windows(S2, STATIONS)
    x = build_input(CAT, "station_guidance", S2, w, NOW)
    assert x["topics"]["car_order"]["seconds"][0]["orders"][0]["soc"] == 58.52
    assert x["topics"]["car_order"]["seconds"][0]["second"] == T0 // 1000
    w["car_order"] = []
    x = build_input(CAT, "station_guidance", S2, w, NOW)
    assert x["topics"]["car_order"] == {"seconds": []}
    assert "car_order" in x["_data_quality"]["available_topics"]
    assert "car_order" not in x["_data_quality"]["age_s"]
    w["car_order"] = None
    x = build_input(CAT, "station_guidance", S2, w, NOW)
    assert x["topics"]["car_order"] is None and "car_order" in x["_data_quality"]["missing_topics"]


# ---- flat layout --------------------------------------------------------------------------------

def flat_catalogue() -> Catalogue:
    return Catalogue.build(module_overrides={m: {"layout": "flat"} for m in CAT.by_module})


def test_flat_layout_merges_and_records_collisions() -> None:
    cat = flat_catalogue()
    w = station_windows(S3, load_windows(cat))
    w["operation_optimization"] = make_item(T0, "x:0:1", {"station_id": S3, "prediction": [9.0],
                                                           "stationId": "other", "hostCode": "X"})
    x = build_input(cat, "thermal_management", S3, w, NOW)
    assert x["stationId"] == S3  # reserved: never overwritten
    assert x["prediction"] == [9.0]  # later dep wins
    assert x["gunNo"] == ["03", "01", "02", "04"]
    assert "filled" not in x
    assert x["device_host_acdc"] == [{"hostCode": "42000000001900", "acPower": 182.6}]
    dcdc = x["device_host_dcdc"]
    assert len(dcdc) == 20 and dcdc[4] == {"hostCode": "42000000001900", "dcWorkStatus": "01",
                                           "moduleIndex": 4, "dcPower": 30.0}
    col = x["_data_quality"]["collisions"]
    assert {"key": "prediction", "kept_from": "operation_optimization",
            "overwritten_from": "load_prediction"} in col
    assert {"key": "station_id", "kept_from": "operation_optimization",
            "overwritten_from": "load_prediction"} in col
    assert {"key": "stationId", "kept_from": "stationId", "overwritten_from": "operation_optimization"} in col
    assert {"key": "hostCode", "kept_from": "operation_optimization",
            "overwritten_from": "station_realtime_data"} not in col  # realtime grid has no hostCode
    assert x["hostCode"] == "X"
    q = dict(x["_data_quality"])
    q.pop("collisions")
    ns = build_input(CAT, "thermal_management", S3, w, NOW)["_data_quality"]
    assert q == ns


def test_flat_layout_topic_keys() -> None:
    cat = flat_catalogue()
    w = station_windows(S1, load_windows(cat))
    x = build_input(cat, "electricity_price", S1, w, NOW)
    assert x["gunNum"] == 4 and x["hostCode"] == ["52000000000088", "52000000000089"]  # station_param keys
    assert x["date"][0] == "2025-11-17" and x["isWeekend"][5] == 1 and len(x["isHoliday"]) == 15
    assert (x["meterId"], x["meterPower"], x["rmeterLimitPower"]) == ("MTR0001", 215.4, 630.0)
    assert x["car_price"]["sendTime"] == "2025-11-19 18:58:14" and len(x["car_price"]["feeNo"]) == 48
    assert x["device_storage"][0]["storageCode"] == "BDDDDD74DAD2CD6B095D"
    assert "_ts_ms" not in x["device_storage"][0]
    # station_param and device_meter both carry meterId: recorded in input order
    assert {"key": "meterId", "kept_from": "device_meter", "overwritten_from": "station_param"} in \
        x["_data_quality"]["collisions"]
    x = build_input(cat, "pv_prediction", S1, w, NOW)
    assert x["pvId"] == "PV01" and len(x["pvPreDcPower"]) == 24 and x["seasonTomorrow"] == "winter"
    x = build_input(cat, "SOH_model", S1, w, NOW)
    assert x["hostError"] == ["E101"] and x["terminalError"] == ["T07"]


def test_flat_car_order_is_one_list_of_orders() -> None:
    cat = flat_catalogue()
    w = station_windows(S2, load_windows(cat))
    o = lambda ts, soc: make_item(ts, "o:0:1", {"stationId": S2, "soc": soc})  # noqa: E731
    w["car_order"] = [{"seq": 3, "second": 1, "late": False, "orders": [o(1000, 1), o(1001, 2)]},
                      {"seq": 4, "second": 2, "late": True, "orders": [o(2000, 3)]}]
    x = build_input(cat, "station_guidance", S2, w, NOW)
    assert [r["soc"] for r in x["car_order"]] == [1, 2, 3]


def test_module_layout_override_only_changes_that_module() -> None:
    cat = Catalogue.build(module_overrides={"pv_prediction": {"layout": "flat"}})
    assert cat.module("load_prediction").layout == "namespaced"
    w = station_windows(S1, STATIONS)
    assert "topics" in build_input(cat, "load_prediction", S1, w, NOW)
    assert "topics" not in build_input(cat, "pv_prediction", S1, w, NOW)
