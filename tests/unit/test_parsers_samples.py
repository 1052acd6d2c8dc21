"""Every shipped sample: good ones parse to the expected records, bad ones to their documented
dead-letter reason (samples/bad/README.md), partial rejections keep the good elements."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from samplefiles import SAMPLES

from parsers.catalogue import default_catalogue
from parsers.envelopes import parse_message
from parsers.records import ParseError

pytestmark = pytest.mark.unit

BAD = SAMPLES / "bad"
CAT = default_catalogue()

S1 = "1053405539402387456"
S2 = "1173980655843938304"
S3 = "1881540927845654529"


def parse_sample(topic: str, path: Path | None = None):
    path = path or SAMPLES / f"{topic}.json"
    return parse_message(CAT.topic(topic), path.read_bytes())


def test_every_input_topic_has_a_sample() -> None:
    names = {p.stem for p in SAMPLES.glob("*.json")}
    assert {t.topic for t in CAT.input_topics} <= names


def test_station_param_array_fans_out_three_stations() -> None:
    res = parse_sample("SCHEDULE-STATION-PARAM")
    assert res.rejections == []
    assert [(r.station_id, r.alias, r.op, r.key, r.element_index) for r in res.records] == [
        (S1, "station_param", "latest", None, 0),
        (S2, "station_param", "latest", None, 1),
        (S3, "station_param", "latest", None, 2),
    ]
    assert res.records[0].payload["hostCode"] == ["52000000000088", "52000000000089"]
    assert res.records[1].payload["power"] == {"powerIds": []}
    assert "power" not in res.records[2].payload


def test_realtime_groups_per_station_with_hours_ascending() -> None:
    res = parse_sample("SCHEDULE-STATION-REALTIME-DATA")
    assert res.rejections == []
    got = [(r.station_id, r.key, r.element_index) for r in res.records]
    assert got == [
        (S3, "2025-11-19 08:00:00", 2),
        (S3, "2025-11-19 09:00:00", 0),
        (S3, "2025-11-19 11:00:00", 4),
        (S2, "2025-11-19 09:00:00", 1),
        (S2, "2025-11-19 10:00:00", 3),
        (S2, "2025-11-19 11:00:00", 5),
    ]
    assert all(r.op == "hourly" and r.alias == "station_realtime_data" for r in res.records)
    h8 = res.records[0].payload
    assert h8["gunPower"]["gunNo"] == ["03", "01", "02"]
    assert h8["outputPowerPerStationAvg"] == 55.95


def test_calendar_is_global_one_record_per_date() -> None:
    res = parse_sample("SCHEDULE-ENVIRONMENT-CALENDAR")
    assert len(res.records) == 15
    assert {r.station_id for r in res.records} == {None}
    assert [r.key for r in res.records][:3] == ["2025-11-17", "2025-11-18", "2025-11-19"]
    assert res.records[-1].key == "2026-01-01"
    assert res.records[-1].payload == {"date": "2026-01-01", "isHoliday": 1, "isWeekend": 0}
    assert all(r.op == "global" for r in res.records)


def test_car_price_one_record_per_station_sorted_by_send_time() -> None:
    res = parse_sample("SCHEDULE-CAR-PRICE")
    assert [(r.station_id, r.op, r.key) for r in res.records] == [(S1, "latest", None), (S2, "latest", None)]
    s1_records = res.records[0].payload
    assert [r["sendTime"] for r in s1_records] == ["2025-11-19 18:58:13", "2025-11-19 18:58:14"]
    assert len(res.records[1].payload) == 1
    assert res.records[1].payload[0]["stationId"] == S2


def test_weather_two_stations() -> None:
    res = parse_sample("SCHEDULE-ENVIRONMENT-WEATHER")
    assert [r.station_id for r in res.records] == [S1, S3]
    assert res.records[0].payload["weatherSituationTomorrow"] == "light rain"


def test_module_output_fans_out_results() -> None:
    res = parse_sample("MODULE-OUTPUT-LOAD_PREDICTION")
    assert [(r.station_id, r.alias, r.op) for r in res.records] == [
        (S2, "load_prediction", "latest"), (S3, "load_prediction", "latest"),
    ]
    assert res.records[1].payload["confidence"] == 0.95
    assert len(res.records[0].payload["prediction"]) == 24


@pytest.mark.parametrize(("topic", "station", "op", "key"), [
    ("SCHEDULE-CAR-ORDER", S2, "orders", None),
    ("SCHEDULE-DEVICE-ERROR", S1, "latest", None),
    ("SCHEDULE-DEVICE-GUN", S1, "latest", None),
    ("SCHEDULE-DEVICE-HOST-ACDC", S3, "devices", "42000000001900"),
    ("SCHEDULE-DEVICE-HOST-DCDC", S3, "devices", "42000000001900"),
    ("SCHEDULE-DEVICE-METER", S1, "latest", None),
    ("SCHEDULE-DEVICE-PV", S1, "latest", None),
    ("SCHEDULE-DEVICE-STORAGE", S1, "devices", "BDDDDD74DAD2CD6B095D"),
])
def test_single_object_topics(topic: str, station: str, op: str, key: str | None) -> None:
    res = parse_sample(topic)
    assert res.rejections == []
    assert len(res.records) == 1
    rec = res.records[0]
    assert (rec.station_id, rec.alias, rec.op, rec.key, rec.element_index) == (
        station, CAT.topic(topic).alias, op, key, None)
    assert rec.payload["stationId"] == station


# ---- bad samples ----------------------------------------------------------------------------

REASONS = {"empty_value", "too_large", "bad_utf8", "too_deep", "bad_json", "non_finite_number",
           "bad_envelope", "missing_station_id", "bad_station_id", "missing_field", "bad_field_type",
           "bad_field_value"}


def _readme_cases() -> list[tuple[str, str, str]]:
    """(file, topic, first reason code named on its line) from the README's list."""
    text = (BAD / "README.md").read_text()
    out = []
    for m in re.finditer(r"^- `([^`]+)` \(([A-Z0-9_-]+)[,)](.*)$", text, re.M):
        reason = next(w for w in re.findall(r"`([a-z0-9_]+)`", m.group(3)) if w in REASONS)
        out.append((m.group(1), m.group(2), reason))
    return out


WHOLE_MESSAGE = [c for c in _readme_cases() if not c[0].startswith(("08_", "16_", "17_", "19_"))]


def test_readme_lists_all_nineteen() -> None:
    assert len(_readme_cases()) == 19


@pytest.mark.parametrize(("name", "topic", "reason"), WHOLE_MESSAGE, ids=[c[0] for c in WHOLE_MESSAGE])
def test_bad_sample_whole_message_reason(name: str, topic: str, reason: str) -> None:
    with pytest.raises(ParseError) as ei:
        parse_message(CAT.topic(topic), (BAD / name).read_bytes())
    assert ei.value.reason == reason
    assert ei.value.element_index is None
    assert CAT.topic(topic).topic in ei.value.detail


def test_bad_08_oversize_is_too_large_before_decoding() -> None:
    element = b'{"stationId":"1053405539402387456","meterId":"MTR0001","meterPower":215.4,"rmeterLimitPower":630.0}'
    value = b"[" + b",".join([element] * (5 * 1024 * 1024 // len(element) + 1)) + b"]"
    assert len(value) > 5 * 1024 * 1024
    with pytest.raises(ParseError) as ei:
        parse_message(CAT.topic("SCHEDULE-DEVICE-METER"), value)
    assert ei.value.reason == "too_large"
    # the same size cut to garbage still says too_large: size is checked before decoding
    with pytest.raises(ParseError) as ei:
        parse_message(CAT.topic("SCHEDULE-DEVICE-METER"), b"\xff" * len(value))
    assert ei.value.reason == "too_large"


def test_bad_16_only_element_1_rejected() -> None:
    res = parse_sample("SCHEDULE-STATION-REALTIME-DATA", BAD / "16_realtime_one_bad_element.json")
    assert [(j.reason, j.element_index) for j in res.rejections] == [("missing_station_id", 1)]
    assert b'"hostCode":"52000000000088"' in res.rejections[0].raw
    assert [(r.station_id, r.key) for r in res.records] == [
        (S2, "2025-11-19 12:00:00"), (S3, "2025-11-19 12:00:00")]
    assert res.records[1].payload["outputPowerPerStationMax"] == 160.0


def test_bad_17_only_record_1_rejected_other_station_kept() -> None:
    res = parse_sample("SCHEDULE-CAR-PRICE", BAD / "17_price_bad_fee_code.json")
    assert [(j.reason, j.element_index) for j in res.rejections] == [("bad_field_value", 1)]
    assert "feeNo17" in res.rejections[0].detail
    assert b'"feeNo17":"05"' in res.rejections[0].raw
    assert [r.station_id for r in res.records] == [S2]
    assert [rec["dialNo"] for rec in res.records[0].payload] == ["2300"]


def test_bad_19_two_rejections_third_applied() -> None:
    res = parse_sample("SCHEDULE-STATION-REALTIME-DATA", BAD / "19_realtime_bad_values.json")
    assert [(j.reason, j.element_index) for j in res.rejections] == [
        ("bad_field_value", 0), ("bad_field_value", 1)]
    assert "length" in res.rejections[0].detail
    assert "2025/11/19 13:00" in res.rejections[1].detail
    assert [(r.station_id, r.key) for r in res.records] == [(S2, "2025-11-19 14:00:00")]
