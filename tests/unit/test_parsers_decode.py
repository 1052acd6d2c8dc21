"""decode_value: the whole-message checks of spec §6.7 in their normative order."""

from __future__ import annotations

import json

import pytest

from parsers.catalogue import default_catalogue
from parsers.decode import decode_value, nesting_depth
from parsers.records import ParseError

pytestmark = pytest.mark.unit

CAT = default_catalogue()
METER = CAT.topic("device_meter")
REALTIME = CAT.topic("station_realtime_data")


def reason(value: bytes | None, spec=METER, max_depth: int = 32) -> str:
    with pytest.raises(ParseError) as ei:
        decode_value(value, spec, max_depth)
    return ei.value.reason


@pytest.mark.parametrize("value", [None, b""])
def test_empty_value(value: bytes | None) -> None:
    assert reason(value) == "empty_value"


def test_too_large_uses_the_topics_max_bytes() -> None:
    assert METER.max_bytes == 1024 * 1024
    body = b'{"stationId":"S","pad":"' + b"x" * METER.max_bytes + b'"}'
    assert reason(body) == "too_large"
    assert decode_value(body, REALTIME)["stationId"] == "S"  # 128 MiB limit on wrappers


def test_exactly_max_bytes_is_accepted() -> None:
    head, tail = b'{"stationId":"S","pad":"', b'"}'
    body = head + b"x" * (METER.max_bytes - len(head) - len(tail)) + tail
    assert len(body) == METER.max_bytes
    assert decode_value(body, METER)["stationId"] == "S"


def test_bad_utf8_before_depth_and_json() -> None:
    assert reason(b'{"a": "\xff' + b"[" * 100) == "bad_utf8"


def test_leading_bom_is_ignored() -> None:
    assert decode_value(b'\xef\xbb\xbf{"stationId": "S"}', METER) == {"stationId": "S"}


def test_too_deep_before_bad_json() -> None:
    assert reason(b"[" * 40) == "too_deep"  # also truncated, but depth is checked first
    assert reason(b"[" * 33 + b"]" * 33) == "too_deep"
    assert decode_value(b"[" * 32 + b"]" * 32, METER) == [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]


def test_depth_limit_is_configurable() -> None:
    value = b'{"a": {"b": {"c": 1}}}'
    assert reason(value, max_depth=2) == "too_deep"
    assert decode_value(value, METER, 3) == {"a": {"b": {"c": 1}}}


def test_brackets_inside_strings_do_not_count() -> None:
    value = json.dumps({"stationId": "S", "text": "[" * 500 + '\\"{{{' * 50}).encode()
    assert nesting_depth(value) == 1
    assert decode_value(value, METER)["stationId"] == "S"


def test_nesting_depth_scan() -> None:
    assert nesting_depth(b"1") == 0
    assert nesting_depth(b"[]") == 1
    assert nesting_depth(b'[{"a": [1, {"b": []}]}, []]') == 5
    assert nesting_depth(b'["]]]]", [["\\"[["]]]') == 3
    assert nesting_depth(b"]]]]") == 0


def test_deep_nesting_never_recurses() -> None:
    value = b'{"stationId":"S","hostError":' + b'{"code":' * 100_000 + b"1" + b"}" * 100_001
    assert reason(value) == "too_deep"


@pytest.mark.parametrize("value", [
    b'{"stationId": "S", "meterPower": 1,}',
    b'{"stationId": "S"} trailing',
    b'{"stationId": "S"',
    b"{'stationId': 'S'}",
    b'{"stationId": "S", "meterPower": nan}',
    b'"\\ud800"',
])
def test_bad_json(value: bytes) -> None:
    assert reason(value) == "bad_json"


@pytest.mark.parametrize("value", [
    b'{"meterPower": NaN}',
    b'{"meterPower": Infinity}',
    b'{"meterPower": -Infinity}',
    b"[1, 2, NaN]",
    b'{"meterPower": 1e400}',
])
def test_non_finite_number(value: bytes) -> None:
    assert reason(value) == "non_finite_number"


@pytest.mark.parametrize("value", [
    b'{"stationId":"S1","meterPower":NaN',  # truncated after the literal
    b'{"stationId":"S1","meterPower":NaN} trailing',
    b'{"meterPower": Infinity,}',
    b'[-Infinity, 1e400',
    b'{"meterPower": NaN, "x": "\\ud800"}',  # a lone surrogate is bad JSON too
    b'{"meterPower": 1e400, "x": "\\ud800"}',
])
def test_bad_json_comes_before_non_finite_number(value: bytes) -> None:
    # spec 6.7: the checks run in order, bad_json (5) before non_finite_number (6)
    assert reason(value) == "bad_json"


def test_nan_inside_a_string_is_fine() -> None:
    assert decode_value(b'{"stationId": "NaN", "x": "Infinity"}', METER) == {"stationId": "NaN", "x": "Infinity"}


def test_huge_integers_decode_as_numbers() -> None:
    assert decode_value(b'{"stationId": 1881540927845654529}', METER) == {"stationId": 1881540927845654529}
    big = decode_value(b'{"v": 123456789012345678901234567890}', METER)["v"]
    assert isinstance(big, (int, float)) and not isinstance(big, bool)
    assert float(big) == pytest.approx(1.2345678901234568e29)


def test_decoded_types_are_plain_json() -> None:
    v = decode_value(b'{"a": [1, 2.5, "x", null, true, {"b": false}]}', METER)
    assert v == {"a": [1, 2.5, "x", None, True, {"b": False}]}
    assert type(v["a"][0]) is int and type(v["a"][1]) is float


def test_memoryview_and_bytearray_inputs() -> None:
    assert decode_value(bytearray(b'{"stationId": "S"}'), METER) == {"stationId": "S"}
    assert decode_value(memoryview(b'{"stationId": "S"}'), METER) == {"stationId": "S"}  # type: ignore[arg-type]


def test_detail_is_bounded_and_names_the_topic() -> None:
    with pytest.raises(ParseError) as ei:
        decode_value(b"{" + b'"k' * 2000, METER)
    assert ei.value.detail.startswith("SCHEDULE-DEVICE-METER")
    assert len(ei.value.detail) <= 500
