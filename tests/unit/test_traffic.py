"""The traffic generator: shapes match the samples, cadences match the spec, seeds reproduce,
bad messages carry the reason the parsers give them."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict

import pytest
from samplefiles import SAMPLES

from parsers.catalogue import Catalogue, default_catalogue
from parsers.envelopes import parse_message
from parsers.records import ParseError
from stationflow.sending import send_traffic
from stationflow.traffic import (
    BAD_KINDS,
    DAY_MS,
    HOUR,
    INPUT_ALIASES,
    MINUTE,
    SECOND,
    STILL_CHARGING,
    Message,
    SimClock,
    Traffic,
    local_time,
    wrap,
)

pytestmark = [pytest.mark.unit, pytest.mark.heavy(28)]

START = 1_763_524_800_000  # 2025-11-19 04:00:00 UTC = 12:00:00 station-local


def _elements(spec, value: bytes) -> list[dict]:
    obj = json.loads(value)
    if spec.envelope == "station_array":
        return obj
    if spec.envelope in ("wrapper", "global_wrapper"):
        assert list(obj) == [spec.wrapper_key]
        return obj[spec.wrapper_key]
    assert isinstance(obj, dict)
    return [obj]


def _jtype(v: object) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "num"
    return type(v).__name__


@pytest.fixture(scope="module")
def hour_of_traffic() -> list[Message]:
    return list(Traffic(stations=6, seed=11, start_ms=START).messages(until_ms=START + HOUR + 5 * MINUTE))


def test_every_input_topic_is_produced_with_catalogue_names(hour_of_traffic: list[Message]) -> None:
    cat = default_catalogue()
    topics = {m.topic for m in hour_of_traffic}
    assert topics == {cat.by_alias[a].topic for a in INPUT_ALIASES}
    assert all(m.reason is None for m in hour_of_traffic)
    ts = [m.timestamp_ms for m in hour_of_traffic]
    assert ts == sorted(ts) and ts[0] == START


def test_field_names_and_types_match_the_samples(hour_of_traffic: list[Message]) -> None:
    cat = default_catalogue()
    got: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for m in hour_of_traffic:
        spec = cat.by_topic[m.topic]
        for el in _elements(spec, m.value):
            for k, v in el.items():
                got[spec.alias][k].add(_jtype(v))
    for alias in INPUT_ALIASES:
        spec = cat.by_alias[alias]
        want: dict[str, set[str]] = defaultdict(set)
        for el in _elements(spec, (SAMPLES / f"{spec.topic}.json").read_bytes()):
            for k, v in el.items():
                want[k].add(_jtype(v))
        assert set(got[alias]) == set(want), alias
        for k in want:
            assert got[alias][k] == want[k], (alias, k)


def test_identifiers_have_production_shapes() -> None:
    t = Traffic(stations=40, seed=5, start_ms=START)
    ids = [st.id for st in t.stations]
    assert len(set(ids)) == 40
    for st in t.stations:
        assert re.fullmatch(r"[1-9]\d{18}", st.id)
        assert 1 <= len(st.hosts) <= 3
        assert 2 <= len(st.guns) <= 8
        assert len({g.no for g in st.guns}) == len(st.guns)
        for h in st.hosts:
            assert re.fullmatch(r"\d{14}", h.code)
        for code in st.storages:
            assert re.fullmatch(r"[0-9A-F]{20}", code)
    assert any(st.storages for st in t.stations) and any(not st.storages for st in t.stations)
    assert any(st.pv_kw for st in t.stations) and any(not st.pv_kw for st in t.stations)


def test_same_seed_same_messages_other_seed_other_stations() -> None:
    a = Traffic(stations=4, seed=42, start_ms=START, bad_rate=0.05).take(4000)
    b = Traffic(stations=4, seed=42, start_ms=START, bad_rate=0.05).take(4000)
    assert a == b
    c = Traffic(stations=4, seed=43, start_ms=START)
    assert {st.id for st in c.stations}.isdisjoint({st.id for st in Traffic(stations=4, seed=42).stations})
    # more stations keep the first ones identical
    assert [s.id for s in Traffic(stations=8, seed=42, start_ms=START).stations][:4] == \
        [s.id for s in Traffic(stations=4, seed=42, start_ms=START).stations]


def test_topic_filter_keeps_the_other_topics_identical() -> None:
    cat = default_catalogue()
    end = START + 10 * MINUTE
    full = [m for m in Traffic(stations=3, seed=9, start_ms=START).messages(until_ms=end)
            if m.topic == cat.by_alias["device_storage"].topic]
    only = list(Traffic(stations=3, seed=9, start_ms=START, topics=["device_storage"]).messages(until_ms=end))
    assert only and only == full
    with pytest.raises(ValueError, match="did you mean"):
        Traffic(stations=1, topics=["device_strage"])
    with pytest.raises(ValueError, match="not an input topic"):
        Traffic(stations=1, topics=["SOH_model"])


def test_renamed_topics_are_honoured() -> None:
    cat = Catalogue.build(topic_names={"car_order": "orders-v2"})
    t = Traffic(stations=2, seed=1, start_ms=START, catalogue=cat, topics=["orders-v2"])
    msgs = t.take(50)
    assert {m.topic for m in msgs} == {"orders-v2"}


def test_car_orders_follow_sessions_every_second(hour_of_traffic: list[Message]) -> None:
    cat = default_catalogue()
    sessions: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for m in hour_of_traffic:
        if m.topic == cat.by_alias["car_order"].topic:
            o = json.loads(m.value)
            sessions[o["transactionSerialNo"]].append((m.timestamp_ms, o))
    assert len(sessions) >= 10
    ended = 0
    for txn, orders in sessions.items():
        assert re.fullmatch(r"[0-9A-F]{32}", txn)
        times = [t for t, _ in orders]
        assert all(b - a == SECOND for a, b in zip(times, times[1:], strict=False)), txn
        socs = [o["soc"] for _, o in orders]
        assert socs == sorted(socs)
        assert {(o["stationId"], o["hostCode"], o["gunNo"], o["startChargeTime"]) for _, o in orders}.__len__() == 1
        assert all(o["endChargeTime"] == STILL_CHARGING for _, o in orders[:-1])
        if orders[-1][1]["endChargeTime"] != STILL_CHARGING:
            ended += 1
            assert orders[-1][1]["endChargeTime"] == local_time(orders[-1][0])
            assert orders[-1][1]["outputPower"] == 0.0
    assert ended >= 1


def test_device_cadences(hour_of_traffic: list[Message]) -> None:
    cat = default_catalogue()
    per_device: dict[tuple[str, str], list[int]] = defaultdict(list)
    charging_at: dict[tuple[str, int], bool] = {}
    for m in hour_of_traffic:
        spec = cat.by_topic[m.topic]
        o = json.loads(m.value)
        if spec.alias == "device_storage":
            per_device[("storage", o["storageCode"])].append(m.timestamp_ms)
        elif spec.alias == "device_gun":
            per_device[("gun", o["hostCode"])].append(m.timestamp_ms)
        elif spec.alias == "device_meter":
            per_device[("meter", o["stationId"])].append(m.timestamp_ms)
        elif spec.alias == "device_host_dcdc":
            per_device[("dcdc", o["hostCode"])].append(m.timestamp_ms)
            charging_at[(o["hostCode"], m.timestamp_ms)] = "01" in o["dcWorkStatus"]
            assert len(o["dcWorkStatus"]) == len(o["dcdcPower"])
    gaps = {kind: set() for kind in ("storage", "gun", "meter", "dcdc")}
    for (kind, _dev), ts in per_device.items():
        gaps[kind] |= {b - a for a, b in zip(ts, ts[1:], strict=False)}
    assert gaps["storage"] == {15 * SECOND}
    assert gaps["gun"] == {15 * SECOND}
    assert gaps["meter"] == {5 * MINUTE}
    assert gaps["dcdc"] == {SECOND, 15 * SECOND}
    # a host reporting working DC/DC modules reports again within a second
    for (kind, dev), ts in per_device.items():
        if kind == "dcdc":
            for a, b in zip(ts, ts[1:], strict=False):
                if charging_at[(dev, a)]:
                    assert b - a == SECOND


def test_realtime_history_then_hourly(hour_of_traffic: list[Message]) -> None:
    cat = default_catalogue()
    spec = cat.by_alias["station_realtime_data"]
    pushes = [m for m in hour_of_traffic if m.topic == spec.topic]
    first = [m for m in pushes if m.timestamp_ms == START]
    later = [m for m in pushes if m.timestamp_ms > START]
    hours: dict[str, set[str]] = defaultdict(set)
    for m in first:
        for el in _elements(spec, m.value):
            hours[el["stationId"]].add(el["sendTime"])
            gp = el["gunPower"]
            assert len(gp["gunNo"]) == len(gp["outputPowerPerGunAvg"]) == len(gp["outputPowerPerGunMax"])
    assert len(hours) == 6 and all(len(h) == 168 for h in hours.values())
    assert max(max(h) for h in hours.values()) == "2025-11-19 11:00:00"
    assert min(min(h) for h in hours.values()) == "2025-11-12 12:00:00"
    assert len(later) == 1 and later[0].timestamp_ms == START + HOUR + 2 * MINUTE
    newest = {el["sendTime"] for el in _elements(spec, later[0].value)}
    assert newest == {"2025-11-19 12:00:00"}


def test_big_pushes_are_split_under_the_message_limit() -> None:
    t = Traffic(stations=30, seed=2, start_ms=START, topics=["station_realtime_data"], max_message_bytes=200_000)
    first = list(t.messages(until_ms=START + 1))
    assert len(first) > 1
    assert all(len(m.value) <= 200_000 for m in first)
    seen: Counter[str] = Counter()
    spec = t.specs["station_realtime_data"]
    for m in first:
        ids = {el["stationId"] for el in _elements(spec, m.value)}
        seen.update(ids)  # a station's hours are never split over two messages
    assert len(seen) == 30 and set(seen.values()) == {1}


def test_slow_topics_at_start_and_their_periods() -> None:
    t = Traffic(stations=3, seed=4, start_ms=START,
                topics=["environment_calendar", "car_price", "environment_weather", "device_pv", "station_param"])
    msgs = list(t.messages(until_ms=START + 31 * DAY_MS))
    by: dict[str, list[Message]] = defaultdict(list)
    for m in msgs:
        by[t.catalogue.by_topic[m.topic].alias].append(m)
    assert [m.timestamp_ms for m in by["environment_calendar"]] == [START]
    assert [m.timestamp_ms for m in by["car_price"]] == [START, START + 30 * DAY_MS]
    assert len(by["environment_weather"]) == 31
    assert [m.timestamp_ms for m in by["station_param"]] == [START]
    cal = json.loads(by["environment_calendar"][0].value)["calendar"]
    dates = [d["date"] for d in cal]
    assert len(dates) == 400 and dates == sorted(dates) and "2025-11-19" in dates
    assert {d["isWeekend"] for d in cal} == {0, 1} and any(d["isHoliday"] for d in cal)
    for rec in json.loads(by["car_price"][0].value)["fee"]:
        codes = [rec[f"feeNo{k}"] for k in range(1, 49)]
        assert set(codes) <= {"00", "01", "02", "03", "04"}
        assert "feeNo49" not in rec
    pv_stations = {st.id for st in t.stations if st.pv_kw}
    assert {json.loads(m.value)["stationId"] for m in by["device_pv"]} == pv_stations


def test_bad_rate_and_labels() -> None:
    t = Traffic(stations=3, seed=8, start_ms=START, bad_rate=0.1)
    msgs = t.take(5000)
    bad = [m for m in msgs if m.reason is not None]
    assert 300 < len(bad) < 650
    reasons = Counter(m.reason for m in bad)
    assert set(reasons) == {"bad_utf8", "bad_json", "bad_envelope", "bad_field_type", "missing_station_id"}
    for m in bad:
        if m.reason == "bad_utf8":
            with pytest.raises(UnicodeDecodeError):
                m.value.decode("utf-8")
        elif m.reason == "bad_json":
            with pytest.raises(ValueError):
                json.loads(m.value)
        else:
            json.loads(m.value)  # well-formed JSON, wrong shape or content
    with pytest.raises(ValueError, match="does not apply"):
        t.bad_message("device_gun", START, "numbers_as_strings")
    with pytest.raises(ValueError):
        Traffic(stations=1, bad_rate=1.5)


def test_generated_messages_parse_and_bad_ones_get_their_reason() -> None:

    t = Traffic(stations=5, seed=21, start_ms=START)
    records: Counter[str] = Counter()
    for m in t.messages(until_ms=START + 20 * MINUTE):
        spec = t.catalogue.by_topic[m.topic]
        res = parse_message(spec, m.value)
        assert res.rejections == [], (m.topic, res.rejections[:1])
        records[spec.alias] += len(res.records)
    assert set(records) >= set(INPUT_ALIASES) - {"device_error"}  # faults are rare
    assert all(n > 0 for n in records.values())
    for alias in INPUT_ALIASES:  # the one-station samples the bad messages start from are good too
        spec = t.catalogue.by_alias[alias]
        res = parse_message(spec, wrap(spec, t.sample_elements(alias)))
        assert res.records and not res.rejections, alias
    checked = 0
    for alias in INPUT_ALIASES:
        for kind in BAD_KINDS:
            try:
                m = t.bad_message(alias, START, kind)
            except ValueError:
                continue
            spec = t.catalogue.by_alias[alias]
            try:
                res = parse_message(spec, m.value)
            except ParseError as e:
                got = (e.reason, e.element_index)
            else:
                assert res.records == [], (alias, kind)
                assert len(res.rejections) == 1, (alias, kind, res.rejections)
                got = (res.rejections[0].reason, res.rejections[0].element_index)
            assert got == (m.reason, m.element_index), (alias, kind)
            checked += 1
    assert checked >= 50


def test_sim_clock() -> None:
    c = SimClock(START, speed=60)
    assert c.sim_ms(1.0) == START + MINUTE
    assert c.wait_s(START + 2 * MINUTE, 1.0) == pytest.approx(1.0)
    assert c.wait_s(START, 5.0) == 0.0
    fast = SimClock(START, speed=0)
    assert fast.wait_s(START + DAY_MS, 0.0) == 0.0


class _FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []
        self.flushed = 0

    def send(self, topic: str, value: bytes, timestamp_ms: int) -> None:
        self.sent.append((topic, value, timestamp_ms))

    def flush(self, timeout: float | None = None) -> None:
        self.flushed += 1


class _FakeTime:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_send_traffic_count_and_summary() -> None:
    t = Traffic(stations=2, seed=3, start_ms=START, bad_rate=0.05)
    p, ft = _FakeProducer(), _FakeTime()
    s = send_traffic(t.messages(), p, SimClock(START, 0), count=500, echo=lambda _: None, now=ft.now, sleep=ft.sleep)
    assert len(p.sent) == 500 == s.sent and p.flushed == 1
    expected = Traffic(stations=2, seed=3, start_ms=START, bad_rate=0.05).take(500)
    assert p.sent == [(m.topic, m.value, m.timestamp_ms) for m in expected]
    assert sum(x.bad for x in s.per_topic.values()) == sum(m.reason is not None for m in expected)
    assert "total" in s.table()


def test_send_traffic_paces_by_speed_and_rate_and_stops_at_duration() -> None:
    # speed 1: the fake wall clock must advance as far as the simulated one
    t = Traffic(stations=2, seed=3, start_ms=START, topics=["device_storage", "device_gun"])
    p, ft = _FakeProducer(), _FakeTime()
    s = send_traffic(t.messages(), p, SimClock(START, 1.0), duration_s=60, echo=lambda _: None,
                     now=ft.now, sleep=ft.sleep)
    assert p.sent and all(ts - START < 60 * SECOND for _, _, ts in p.sent)
    assert ft.t - 1000.0 == pytest.approx(60, abs=0.3)
    assert s.sim_ms == p.sent[-1][2]
    # rate cap: 200 messages at 50/s take about 4 s even with speed "max"
    p2, ft2 = _FakeProducer(), _FakeTime()
    lines: list[str] = []
    send_traffic(Traffic(stations=2, seed=3, start_ms=START).messages(), p2, SimClock(START, 0), count=200,
                 rate=50, progress_s=1.0, echo=lines.append, now=ft2.now, sleep=ft2.sleep)
    assert len(p2.sent) == 200
    assert ft2.t - 1000.0 == pytest.approx(199 / 50, abs=0.3)
    assert len(lines) >= 3 and lines[0].startswith("sent ")


def test_send_traffic_stops_cleanly_on_ctrl_c() -> None:
    def interrupted():
        yield from Traffic(stations=1, seed=1, start_ms=START).take(10)
        raise KeyboardInterrupt

    p, ft = _FakeProducer(), _FakeTime()
    s = send_traffic(interrupted(), p, SimClock(START, 0), echo=lambda _: None, now=ft.now, sleep=ft.sleep)
    assert s.interrupted and s.sent == 10 and p.flushed == 1
