"""Envelope and element checks, fan-out shapes and in-message merging (spec §3, §5, §6.2, §6.7)."""

from __future__ import annotations

import json

import pytest

from parsers.catalogue import default_catalogue
from parsers.envelopes import parse_message
from parsers.records import ParseError

pytestmark = pytest.mark.unit

CAT = default_catalogue()
S = "1053405539402387456"


def enc(obj) -> bytes:
    return json.dumps(obj).encode()


def parse(alias: str, obj):
    return parse_message(CAT.topic(alias), enc(obj))


def error(alias: str, obj) -> ParseError:
    with pytest.raises(ParseError) as ei:
        parse(alias, obj)
    return ei.value


def hour(station: str, send_time: str, guns=None, avg=None, mx=None, **extra) -> dict:
    el = {"stationId": station, "hostCode": "H1", "sendTime": send_time}
    if guns is not None:
        el["gunPower"] = {"gunNo": guns, "outputPowerPerGunAvg": avg, "outputPowerPerGunMax": mx}
    el.update(extra)
    return el


# ---- station id ----------------------------------------------------------------------------

@pytest.mark.parametrize(("sid", "why"), [
    (None, "missing_station_id"),
    ("", "bad_station_id"),
    (" 1053405539402387456", "bad_station_id"),
    ("10534 05539", "bad_station_id"),
    ("1053\t405", "bad_station_id"),
    ("1053\x00405", "bad_station_id"),
    ("1053\u00a0405", "bad_station_id"),
    ("x" * 129, "bad_station_id"),
    (1053405539402387456, "bad_station_id"),
    (12.5, "bad_station_id"),
    (True, "bad_station_id"),
    (["S"], "bad_station_id"),
])
def test_station_id_rules(sid, why: str) -> None:
    obj = {"meterId": "M", "meterPower": 1.0}
    if sid is not None:
        obj["stationId"] = sid
    e = error("device_meter", obj)
    assert e.reason == why
    assert e.element_index is None


def test_station_id_limits_accepted() -> None:
    for sid in ("x" * 128, "S", "站点-1_a.b:c"):
        assert parse("device_meter", {"stationId": sid}).records[0].station_id == sid


def test_null_station_id_counts_as_missing() -> None:
    assert error("device_meter", {"stationId": None, "meterPower": 1}).reason == "missing_station_id"


# ---- required fields and types -------------------------------------------------------------

@pytest.mark.parametrize(("alias", "obj", "field"), [
    ("device_host_dcdc", {"stationId": S, "dcWorkStatus": ["01"], "dcdcPower": [1.0]}, "hostCode"),
    ("device_host_acdc", {"stationId": S, "hostCode": None, "acPower": 1.0}, "hostCode"),
    ("device_storage", {"stationId": S, "hostCode": "H"}, "storageCode"),
])
def test_missing_required_field_single(alias: str, obj: dict, field: str) -> None:
    e = error(alias, obj)
    assert (e.reason, e.element_index) == ("missing_field", None)
    assert field in e.detail


def test_missing_send_time_and_date_reject_the_element_only() -> None:
    res = parse("station_realtime_data", {"realTimeData": [{"stationId": S}, hour(S, "2025-11-19 10:00:00")]})
    assert [(r.reason, r.element_index) for r in res.rejections] == [("missing_field", 0)]
    assert len(res.records) == 1
    res = parse("environment_calendar", {"calendar": [{"isHoliday": 0}, {"date": "2025-01-01", "isHoliday": 1}]})
    assert [(r.reason, r.element_index) for r in res.rejections] == [("missing_field", 0)]
    assert [r.key for r in res.records] == ["2025-01-01"]


@pytest.mark.parametrize(("alias", "field", "value"), [
    ("device_meter", "meterPower", "215.4"),
    ("device_meter", "meterPower", True),
    ("device_meter", "meterId", 17),
    ("station_param", "hostCode", "52000000000088"),
    ("station_param", "hostCode", ["a", None]),
    ("station_param", "power", ["sntt55"]),
    ("station_param", "gunNum", False),
    ("device_host_dcdc", "dcdcPower", [1.0, "2.0"]),
    ("device_host_dcdc", "dcdcPower", 3.0),
    ("device_error", "hostError", "E101"),
    ("device_error", "hostError", [101]),
    ("device_pv", "pvPreDcPower", [0.0, True]),
    ("car_order", "soc", "58.52"),
    ("car_order", "gunNo", 1),
    ("device_gun", "status", ["idle", 1]),
    ("device_storage", "batteryGroupSoc", {"v": 1}),
])
def test_bad_field_type(alias: str, field: str, value) -> None:
    keys = {"device_host_dcdc": {"hostCode": "H"}, "device_storage": {"storageCode": "SC"}}
    obj = {"stationId": S, **keys.get(alias, {}), field: value}
    e = error(alias, obj)
    assert e.reason == "bad_field_type"
    assert repr(field) in e.detail


def test_nested_field_types() -> None:
    e = error("station_param", {"stationId": S, "power": {"powerIds": "p1"}})
    assert e.reason == "bad_field_type" and "power.powerIds" in e.detail
    res = parse("station_realtime_data", {"realTimeData": [
        hour(S, "2025-11-19 10:00:00", ["01"], ["1.0"], [2.0])]})
    assert [(r.reason, r.element_index) for r in res.rejections] == [("bad_field_type", 0)]


def test_calendar_bits_accept_ints_and_bools_only() -> None:
    ok = parse("environment_calendar", {"calendar": [
        {"date": "2025-01-01", "isHoliday": 1, "isWeekend": False},
        {"date": "2025-01-02", "isHoliday": True, "isWeekend": 0}]})
    assert len(ok.records) == 2 and ok.rejections == []
    bad = parse("environment_calendar", {"calendar": [
        {"date": "2025-01-01", "isHoliday": 2}, {"date": "2025-01-02", "isHoliday": "1"},
        {"date": "2025-01-03", "isWeekend": 1.0}]})
    assert [(r.reason, r.element_index) for r in bad.rejections] == [
        ("bad_field_type", 0), ("bad_field_type", 1), ("bad_field_type", 2)]
    assert bad.records == []


def test_number_lists_may_hold_null_and_absent_optional_fields_pass() -> None:
    res = parse("device_pv", {"stationId": S, "pvPreDcPower": [1.0, None, 2]})
    assert res.records[0].payload["pvPreDcPower"] == [1.0, None, 2]
    res = parse("device_meter", {"stationId": S, "meterPower": None, "extra": {"kept": [1]}})
    assert res.records[0].payload == {"stationId": S, "meterPower": None, "extra": {"kept": [1]}}


# ---- field values ----------------------------------------------------------------------------

@pytest.mark.parametrize("send_time", [
    "2025/11/19 13:00", "2025-11-19T13:00:00", "2025-11-19 13:00", "2025-13-19 13:00:00",
    "2025-02-30 10:00:00", "2025-11-19 24:00:00", "2025-11-19 13:00:00Z", "２０２５-11-19 13:00:00",
])
def test_bad_send_time_values(send_time: str) -> None:
    res = parse("station_realtime_data", {"realTimeData": [hour(S, send_time)]})
    assert [(r.reason, r.element_index) for r in res.rejections] == [("bad_field_value", 0)]
    e = error("device_gun", {"stationId": S, "sendTime": send_time})
    assert e.reason == "bad_field_value"


@pytest.mark.parametrize("day", ["2025-1-01", "2025-02-29", "20250101", "2025-01-01 00:00:00"])
def test_bad_calendar_dates(day: str) -> None:
    res = parse("environment_calendar", {"calendar": [{"date": day}]})
    assert [(r.reason, r.element_index) for r in res.rejections] == [("bad_field_value", 0)]


def test_fee_codes_and_dcdc_lengths() -> None:
    res = parse("car_price", {"fee": [
        {"stationId": S, "sendTime": "2025-11-19 18:58:13", "feeNo1": "04", "feeNo48": "00"},
        {"stationId": S, "sendTime": "2025-11-19 18:58:13", "feeNo48": "4"},
        {"stationId": S, "sendTime": "2025-11-19 18:58:13", "feeNo3": 3}]})
    assert [(r.reason, r.element_index) for r in res.rejections] == [("bad_field_value", 1), ("bad_field_type", 2)]
    assert len(res.records) == 1 and len(res.records[0].payload) == 1
    e = error("device_host_dcdc", {"stationId": S, "hostCode": "H", "dcWorkStatus": ["01", "00"], "dcdcPower": [1.0]})
    assert e.reason == "bad_field_value"


def test_gun_lists_of_different_lengths() -> None:
    res = parse("station_realtime_data", {"realTimeData": [hour(S, "2025-11-19 10:00:00", ["01", "02"], [1.0, 2.0], None)]})
    assert res.rejections == []  # a missing list is not a length mismatch
    res = parse("station_realtime_data", {"realTimeData": [hour(S, "2025-11-19 10:00:00", ["01", "02"], [1.0], [1.0, 2.0])]})
    assert [(r.reason, r.element_index) for r in res.rejections] == [("bad_field_value", 0)]


def test_empty_device_key_is_a_bad_value() -> None:
    assert error("device_storage", {"stationId": S, "storageCode": ""}).reason == "bad_field_value"


def test_non_object_elements_are_rejected_individually() -> None:
    res = parse("station_param", [{"stationId": S}, "S2", 7, None, [], {"stationId": "S3"}])
    assert [(r.reason, r.element_index) for r in res.rejections] == [
        ("bad_field_value", 1), ("bad_field_value", 2), ("bad_field_value", 3), ("bad_field_value", 4)]
    assert [r.raw for r in res.rejections] == [b'"S2"', b"7", b"null", b"[]"]
    assert [r.station_id for r in res.records] == [S, "S3"]


# ---- envelopes ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("alias", "obj"), [
    ("device_meter", []),
    ("device_meter", "x"),
    ("device_meter", 5),
    ("device_meter", {}),
    ("device_meter", {"fee": [{"stationId": S}]}),
    ("device_meter", {"realTimeData": []}),
    ("station_param", {}),
    ("station_param", 5),
    ("station_realtime_data", {"realTimeData": {"stationId": S}}),
    ("station_realtime_data", {"weather": []}),
    ("station_realtime_data", None),
    ("car_price", {"fee": None}),
    ("environment_weather", [{"stationId": S}]),
    ("environment_calendar", {"calendar": "2025-01-01"}),
    ("environment_calendar", []),
    ("load_prediction", {"results": {"station_id": S}}),
    ("load_prediction", {"batch_id": "x"}),
    ("load_prediction", [{"station_id": S}]),
    ("load_prediction", {"module": "pv_prediction", "results": []}),
])
def test_bad_envelopes(alias: str, obj) -> None:
    e = error(alias, obj)
    assert (e.reason, e.element_index) == ("bad_envelope", None)


def test_empty_wrapper_lists_are_no_ops() -> None:
    for alias, obj in [("station_realtime_data", {"realTimeData": []}), ("car_price", {"fee": []}),
                       ("environment_weather", {"weather": [], "other": 1}), ("station_param", []),
                       ("environment_calendar", {"calendar": []}), ("load_prediction", {"results": []})]:
        res = parse(alias, obj)
        assert (res.records, res.rejections) == ([], [])


def test_other_wrapper_keys_are_ignored() -> None:
    res = parse("environment_weather", {"meta": {"v": 2}, "weather": [{"stationId": S, "seasonTomorrow": "winter"}]})
    assert [(r.station_id, r.payload["seasonTomorrow"]) for r in res.records] == [(S, "winter")]


def test_station_param_single_object_and_its_errors() -> None:
    res = parse("station_param", {"stationId": S, "gunNum": 4})
    assert [(r.station_id, r.element_index, r.payload["gunNum"]) for r in res.records] == [(S, None, 4)]
    e = error("station_param", {"gunNum": 4})
    assert (e.reason, e.element_index) == ("missing_station_id", None)


def test_calendar_ignores_station_ids_inside() -> None:
    res = parse("environment_calendar", {"calendar": [{"date": "2025-01-01", "stationId": 12}]})
    assert [(r.station_id, r.key) for r in res.records] == [(None, "2025-01-01")]


def test_module_output_checks_station_id_snake_case() -> None:
    res = parse("SOH_model", {"module": "SOH_model", "results": [
        {"station_id": S, "soh": 0.97}, {"stationId": S}, {"station_id": 5}]})
    assert [(r.reason, r.element_index) for r in res.rejections] == [
        ("missing_station_id", 1), ("bad_station_id", 2)]
    assert [(r.station_id, r.alias, r.op, r.payload["soh"]) for r in res.records] == [(S, "SOH_model", "latest", 0.97)]


# ---- fan-out shapes ---------------------------------------------------------------------------

def test_same_hour_items_are_merged() -> None:
    res = parse("station_realtime_data", {"realTimeData": [
        hour(S, "2025-11-19 10:00:00", ["01", "02"], [1.0, 2.0], [10.0, 20.0], outputPowerPerStationAvg=3.0),
        hour("OTHER", "2025-11-19 10:00:00", ["01"], [9.0], [9.0]),
        hour(S, "2025-11-19 10:30:00", ["02", "03"], [5.0, 6.0], [50.0, 60.0], hostCode="H2",
             outputPowerPerStationMax=70.0),
        hour(S, "2025-11-19 10:59:59", None, outputPowerPerStationAvg=None),
    ]})
    assert res.rejections == []
    assert [(r.station_id, r.key, r.element_index) for r in res.records] == [
        (S, "2025-11-19 10:00:00", 0), ("OTHER", "2025-11-19 10:00:00", 1)]
    p = res.records[0].payload
    assert p["gunPower"] == {"gunNo": ["01", "02", "03"], "outputPowerPerGunAvg": [1.0, 5.0, 6.0],
                             "outputPowerPerGunMax": [10.0, 50.0, 60.0]}
    assert p["outputPowerPerStationAvg"] == 3.0  # the last item *having* it (null does not count)
    assert p["outputPowerPerStationMax"] == 70.0
    assert p["hostCode"] == "H1"  # the last item has a hostCode again
    assert p["sendTime"] == "2025-11-19 10:59:59"


def test_hourly_records_sorted_by_hour_per_station() -> None:
    res = parse("station_realtime_data", {"realTimeData": [
        hour(S, "2025-11-19 12:00:00"), hour(S, "2025-11-18 23:00:00"), hour("B", "2025-11-19 01:00:00"),
        hour(S, "2025-11-19 00:15:00")]})
    assert [(r.station_id, r.key) for r in res.records] == [
        (S, "2025-11-18 23:00:00"), (S, "2025-11-19 00:00:00"), (S, "2025-11-19 12:00:00"),
        ("B", "2025-11-19 01:00:00")]


def test_latest_topics_last_element_wins() -> None:
    res = parse("environment_weather", {"weather": [
        {"stationId": S, "seasonTomorrow": "winter"}, {"stationId": "B", "seasonTomorrow": "x"},
        {"stationId": S, "seasonTomorrow": "spring"}]})
    assert [(r.station_id, r.payload["seasonTomorrow"], r.element_index) for r in res.records] == [
        ("B", "x", 1), (S, "spring", 2)]
    res = parse("station_param", [{"stationId": S, "gunNum": 1}, {"stationId": S, "gunNum": 2}])
    assert [(r.station_id, r.payload["gunNum"]) for r in res.records] == [(S, 2)]


def test_price_records_sorted_by_send_time_then_message_order() -> None:
    res = parse("car_price", {"fee": [
        {"stationId": S, "sendTime": "2025-11-19 18:58:14", "dialNo": "a"},
        {"stationId": S, "sendTime": "2025-11-19 18:58:13", "dialNo": "b"},
        {"stationId": S, "sendTime": "2025-11-19 18:58:14", "dialNo": "c"},
        {"stationId": "B", "sendTime": "2025-11-19 18:58:13", "dialNo": "d"}]})
    assert [(r.station_id, [x["dialNo"] for x in r.payload]) for r in res.records] == [
        (S, ["b", "a", "c"]), ("B", ["d"])]


def test_calendar_duplicate_dates_last_wins_sorted() -> None:
    res = parse("environment_calendar", {"calendar": [
        {"date": "2025-01-02", "isHoliday": 0}, {"date": "2025-01-01", "isHoliday": 0},
        {"date": "2025-01-02", "isHoliday": 1}]})
    assert [(r.key, r.payload["isHoliday"], r.element_index) for r in res.records] == [
        ("2025-01-01", 0, 1), ("2025-01-02", 1, 2)]


def test_rejection_detail_names_topic_index_and_station() -> None:
    res = parse("station_realtime_data", {"realTimeData": [hour(S, "bad")]})
    d = res.rejections[0].detail
    assert "SCHEDULE-STATION-REALTIME-DATA" in d and "element 0" in d and S in d


def test_unexpected_errors_are_internal_errors_not_bad_input(monkeypatch) -> None:
    from parsers import envelopes

    def boom(spec, obj):
        raise KeyError("parser bug")

    monkeypatch.setitem(envelopes._ENVELOPES, "single", boom)
    with pytest.raises(ParseError) as ei:
        parse("device_meter", {"stationId": S})
    assert ei.value.reason == "internal_error"
    assert "KeyError" in ei.value.detail and "SCHEDULE-DEVICE-METER" in ei.value.detail
    assert isinstance(ei.value.__cause__, KeyError)  # the traceback the ingester logs
    with pytest.raises(ParseError) as ei:
        envelopes.parse_value(CAT.topic("device_meter"), {"stationId": S})
    assert ei.value.reason == "internal_error" and isinstance(ei.value.__cause__, KeyError)


def test_parse_value_skips_decoding() -> None:
    from parsers.envelopes import parse_value

    res = parse_value(CAT.topic("device_pv"), {"stationId": S, "pvPreDcPower": [1.0]})
    assert [(r.station_id, r.payload["pvPreDcPower"]) for r in res.records] == [(S, [1.0])]


def test_overridden_kind_changes_record_op() -> None:
    from parsers.catalogue import Catalogue

    cat = Catalogue.build(topic_overrides={"device_meter": {"kind": "append", "window_size": 10},
                                           "car_price": {"kind": "append", "window_size": 5}})
    res = parse_message(cat.topic("device_meter"), enc({"stationId": S, "meterPower": 1.0}))
    assert [(r.op, r.key) for r in res.records] == [("append", None)]
    res = parse_message(cat.topic("car_price"), enc({"fee": [{"stationId": S, "dialNo": "a"},
                                                             {"stationId": S, "dialNo": "b"}]}))
    assert [(r.op, r.payload["dialNo"], r.element_index) for r in res.records] == [("append", "a", 0), ("append", "b", 1)]
