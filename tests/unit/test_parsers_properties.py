"""Property tests: no input makes a parser raise anything but ParseError with an input reason
of spec §6.7 (never `internal_error`, the reason of a parser bug), and in a partly bad
multi-station message exactly the bad elements are rejected while every good one survives."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from samplefiles import SAMPLES

from parsers.catalogue import default_catalogue
from parsers.envelopes import INTERNAL_ERROR, parse_message
from parsers.fields import FIELD_TYPES
from parsers.records import ParseError, ParseResult

pytestmark = [pytest.mark.unit, pytest.mark.heavy(80)]

CAT = default_catalogue()
TOPICS = list(CAT.topics)
REASONS = {"empty_value", "too_large", "bad_utf8", "too_deep", "bad_json", "non_finite_number",
           "bad_envelope", "missing_station_id", "bad_station_id", "missing_field", "bad_field_type",
           "bad_field_value"}

KNOWN_KEYS = sorted({"stationId", "station_id", "results", "module", "realTimeData", "fee", "weather",
                     "calendar", "date", "gunNo", "outputPowerPerGunAvg", "outputPowerPerGunMax"}
                    | {f.split(".")[0] for fields in FIELD_TYPES.values() for f in fields})

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
           | st.sampled_from(["1053405539402387456", "2025-11-19 10:00:00", "2025-11-19", "03", "05", ""]))
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=6)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=6),
    max_leaves=25,
)


def check(result: ParseResult, spec) -> None:
    """Invariants of any successful parse."""
    for r in result.records:
        assert r.alias == spec.alias and r.op == spec.kind
        if spec.is_global:
            assert r.station_id is None
        else:
            assert isinstance(r.station_id, str) and 0 < len(r.station_id) <= 128
        orjson.dumps(r.payload)  # always strict-JSON serialisable
    for j in result.rejections:
        assert j.reason in REASONS and isinstance(j.element_index, int) and isinstance(j.raw, bytes)


def enc(value) -> bytes:
    """stdlib encoder: it writes integers of any size, which the parser must cope with."""
    return json.dumps(value).encode()


def run(spec, value: bytes) -> None:
    try:
        result = parse_message(spec, value)
    except ParseError as e:
        assert e.reason != INTERNAL_ERROR, f"parser bug on {spec.topic}: {e.detail}"
        assert e.reason in REASONS, e.reason
        assert len(e.detail) <= 500
        return
    check(result, spec)


@pytest.mark.parametrize("spec", TOPICS, ids=[t.alias for t in TOPICS])
@given(value=json_values)
def test_random_json_only_parse_error_escapes(spec, value) -> None:
    run(spec, enc(value))


@pytest.mark.parametrize("spec", TOPICS, ids=[t.alias for t in TOPICS])
@given(value=st.dictionaries(keys, json_values, max_size=8))
def test_random_wrapped_elements_only_parse_error_escapes(spec, value) -> None:
    wrapped = {spec.wrapper_key: [value, value]} if spec.wrapper_key else value
    run(spec, enc(wrapped))


@pytest.mark.parametrize("spec", TOPICS, ids=[t.alias for t in TOPICS])
@given(value=st.binary(max_size=200))
@example(value=b"{}")  # random bytes are rarely JSON: these always reach the envelope stage
@example(value=b'[{"stationId":"1"}]')
def test_random_bytes_only_parse_error_escapes(spec, value: bytes) -> None:
    run(spec, value)


SAMPLE_BYTES = {p.stem: p.read_bytes() for p in SAMPLES.glob("*.json")}


@pytest.mark.parametrize("topic", sorted(SAMPLE_BYTES))
@given(data=st.data())
def test_mutated_samples_only_parse_error_escapes(topic: str, data) -> None:
    raw = SAMPLE_BYTES[topic]
    cut = data.draw(st.integers(0, len(raw)))
    choice = data.draw(st.sampled_from(["truncate", "insert", "replace_field"]))
    if choice == "truncate":
        value = raw[:cut]
    elif choice == "insert":
        value = raw[:cut] + data.draw(st.binary(min_size=1, max_size=4)) + raw[cut:]
    else:
        obj = json.loads(raw)
        target = obj
        if isinstance(obj, dict) and len(obj) == 1 and isinstance(next(iter(obj.values())), list):
            target = next(iter(obj.values()))
        if isinstance(target, list) and target:
            target = target[data.draw(st.integers(0, len(target) - 1))]
        if isinstance(target, dict):
            target[data.draw(keys)] = data.draw(json_values)
        value = enc(obj)
    run(CAT.topic(topic), value)


# ---- partly bad messages ------------------------------------------------------------------------

station_ids = st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=20)
hours = st.integers(0, 23).map(lambda h: f"2025-11-19 {h:02d}:00:00")
bad_elements = st.sampled_from([
    {"hostCode": "H"},  # no stationId
    {"stationId": 17, "sendTime": "2025-11-19 01:00:00"},
    {"stationId": "S S", "sendTime": "2025-11-19 01:00:00"},
    {"stationId": "X", "sendTime": "2025/11/19 01:00"},
    {"stationId": "X"},
    {"stationId": "X", "sendTime": "2025-11-19 01:00:00", "gunPower": {"gunNo": ["01"], "outputPowerPerGunAvg": []}},
    {"stationId": "X", "sendTime": "2025-11-19 01:00:00", "outputPowerPerStationAvg": "1"},
    "not an object",
    None,
    [1, 2],
])


@given(good=st.lists(st.tuples(station_ids, hours, st.floats(0, 500)), min_size=1, max_size=8),
       bad=st.lists(st.tuples(st.integers(0, 20), bad_elements), max_size=5))
def test_realtime_keeps_every_good_element(good, bad) -> None:
    elements: list = [{"stationId": s, "sendTime": h, "outputPowerPerStationAvg": p,
                       "gunPower": {"gunNo": ["01"], "outputPowerPerGunAvg": [p], "outputPowerPerGunMax": [p]}}
                      for s, h, p in good]
    for pos, el in bad:
        elements.insert(min(pos, len(elements)), el)
    bad_positions = [i for i, el in enumerate(elements) if not (isinstance(el, dict) and
                     el.get("gunPower", {}).get("outputPowerPerGunMax") is not None and
                     isinstance(el.get("outputPowerPerStationAvg"), float))]
    res = parse_message(CAT.topic("station_realtime_data"), orjson.dumps({"realTimeData": elements}))
    assert [j.element_index for j in res.rejections] == bad_positions
    expected_slots = {(s, h) for s, h, _ in good}
    assert {(r.station_id, r.key) for r in res.records} == expected_slots
    # the last good element of each (station, hour) decides the station-level value
    last = {}
    for s, h, p in good:
        last[(s, h)] = p
    assert {(r.station_id, r.key): r.payload["outputPowerPerStationAvg"] for r in res.records} == last


@given(good=st.lists(st.tuples(station_ids, st.sampled_from(["sunny", "rain"])), min_size=1, max_size=6),
       bad=st.lists(st.tuples(st.integers(0, 10), st.sampled_from(
           [{"seasonTomorrow": "x"}, {"stationId": ""}, {"stationId": "A", "seasonTomorrow": 1}, 5])), max_size=4))
def test_weather_keeps_every_good_element(good, bad) -> None:
    elements: list = [{"stationId": s, "weatherSituationTomorrow": w} for s, w in good]
    for pos, el in bad:
        elements.insert(min(pos, len(elements)), el)
    res = parse_message(CAT.topic("environment_weather"), orjson.dumps({"weather": elements}))
    good_positions = [i for i, el in enumerate(elements) if isinstance(el, dict) and "weatherSituationTomorrow" in el]
    assert sorted(j.element_index for j in res.rejections) == sorted(set(range(len(elements))) - set(good_positions))
    last = {s: w for s, w in good}
    assert {r.station_id: r.payload["weatherSituationTomorrow"] for r in res.records} == last
