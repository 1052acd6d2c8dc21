"""WindowStore behaviour. Runs on fakeredis+lupa here and, unchanged, on a real redis-server
from tests/integration/test_store_windows_redis.py (which overrides the `r` fixture)."""

from __future__ import annotations

import random
import threading

import pytest
from redisstate import redis_state

from parsers import windows as model
from parsers.catalogue import Catalogue
from parsers.records import Record, Source
from store.codec import decode_item
from store.counters import Counters
from store.keys import Keys
from store.poll_write import PollWrite
from store.windows import StoreError, WindowStore

T0 = 1_763_524_800_000  # 2025-11-19 04:00:00 UTC, ms
S1, S2 = "1053405539402387456", "1173980655843938304"

P_PARAM = "SCHEDULE-STATION-PARAM"
P_RT = "SCHEDULE-STATION-REALTIME-DATA"
P_CAL = "SCHEDULE-ENVIRONMENT-CALENDAR"
P_METER = "SCHEDULE-DEVICE-METER"
P_ORDER = "SCHEDULE-CAR-ORDER"
P_DCDC = "SCHEDULE-DEVICE-HOST-DCDC"
P_LOAD = "MODULE-OUTPUT-LOAD_PREDICTION"

SMALL = {
    "station_realtime_data": {"window_size": 5},
    "environment_calendar": {"window_size": 4},
    "device_host_dcdc": {"window_size": 3},
    "device_meter": {"kind": "append", "window_size": 3},
    "car_order": {"window_size": 3},
}


@pytest.fixture
def r(fake_redis):
    return fake_redis


@pytest.fixture
def ws(r):
    return WindowStore(r, Catalogue.build(), outputs_keep=2)


@pytest.fixture
def small(r):
    return WindowStore(r, Catalogue.build(topic_overrides=SMALL))


def msg(topic, offset, ts, *records, partition=0):
    return (Source(topic, partition, offset, ts), list(records))


def rec(station, alias, payload, key=None, op="latest"):
    return Record(station, alias, op, key, payload)


def hour(i: int) -> str:
    return model.hour_key(model.hour_index("2025-11-19 00:00:00") + i)


def dump(r, prefix="sf"):
    """Every window key's full content and whether it has a TTL (counters, registry and the
    order-due index excluded: they record deliveries, not window content)."""
    return redis_state(r, skip=(f"{prefix}:counters:", f"{prefix}:stations", f"{prefix}:due:"), decode=True)


# ---- latest, append, outputs ---------------------------------------------------------------

def test_latest_newest_record_wins_and_ties_go_to_later_arrival(ws, r):
    res = ws.apply([msg(P_PARAM, 1, T0, rec(S1, "station_param", {"v": 1}))], T0)
    assert res.applied == 1
    ws.apply([msg(P_PARAM, 2, T0 - 5, rec(S1, "station_param", {"v": "older"}))], T0)
    got = ws.read_windows(S1, ["station_param"])["station_param"]
    assert got == {"ts": T0, "src": f"{P_PARAM}:0:1", "payload": {"v": 1}}
    res = ws.apply([msg(P_PARAM, 3, T0, rec(S1, "station_param", {"v": "tie"}))], T0)
    assert res.applied == 1
    assert ws.read_windows(S1, ["station_param"])["station_param"]["payload"] == {"v": "tie"}
    # several records for one station in one message: the last in message order wins
    ws.apply([msg(P_PARAM, 4, T0 + 1, rec(S1, "station_param", {"v": "a"}), rec(S1, "station_param", {"v": "b"}))], T0)
    assert ws.read_windows(S1, ["station_param"])["station_param"]["payload"] == {"v": "b"}
    assert r.hget(Keys().meta(S1), "ts:station_param") == str(T0 + 1).encode()


def test_older_record_counts_as_superseded(ws):
    ws.apply([msg(P_PARAM, 1, T0, rec(S1, "station_param", {"v": 1}))], T0)
    res = ws.apply([msg(P_PARAM, 2, T0 - 1, rec(S1, "station_param", {"v": 0}))], T0)
    assert (res.applied, res.superseded) == (0, 1)
    ws.flush_counters()
    assert Counters(ws.r).get(f"topic:{P_PARAM}") == {"records_applied": 1, "records_superseded": 1}


def test_retention_ttls(ws, r):
    k = Keys()
    ws.apply([
        msg(P_PARAM, 1, T0, rec(S1, "station_param", {"v": 1})),
        msg(P_METER, 1, T0, rec(S1, "device_meter", {"meterPower": 3.0})),
        msg(P_CAL, 1, T0, rec(None, "environment_calendar", {"date": "2025-11-11"}, key="2025-11-11", op="global")),
    ], T0)
    assert r.pttl(k.latest(S1, "station_param")) == -1  # no TTL: kept until replaced
    week = 7 * 86_400_000
    assert week - 5_000 < r.pttl(k.latest(S1, "device_meter")) <= week
    assert 799 * 86_400_000 < r.pttl(k.global_window("environment_calendar")) <= 800 * 86_400_000
    assert r.pttl(k.meta(S1)) == -1  # meta outlives windows that never expire


def test_append_caps_oldest_first(small):
    for i in range(5):
        small.apply([msg(P_METER, i, T0 + i, rec(S1, "device_meter", {"i": i}, op="append"))], T0)
    got = small.read_windows(S1, ["device_meter"])["device_meter"]
    assert [x["payload"]["i"] for x in got] == [2, 3, 4]


def test_external_output_via_apply_and_local_store_output(ws, r):
    res = ws.apply([msg(P_LOAD, 7, T0, rec(S1, "load_prediction", {"station_id": S1, "prediction": [1.0]}))], T0)
    assert [(t.station_id, t.alias) for t in res.triggers] == [(S1, "load_prediction")]
    assert ws.read_output(S1, "load_prediction")[0]["payload"]["prediction"] == [1.0]
    ws.store_output(S1, "load_prediction", {"station_id": S1, "prediction": [2.0]}, T0 + 10)
    ws.store_output(S1, "load_prediction", {"station_id": S1, "prediction": [3.0]}, T0 + 20)
    outs = ws.read_output(S1, "load_prediction", n=5)
    assert [o["payload"]["prediction"] for o in outs] == [[3.0], [2.0]]  # keep=2, newest first
    assert r.pttl(Keys().output(S1, "load_prediction")) > 0
    sw = ws.read_station(S1, ["station_guidance"], T0)
    assert sw.windows_for("station_guidance")["load_prediction"]["payload"]["prediction"] == [3.0]


# ---- hourly ----------------------------------------------------------------------------------

def rt(station, h, v, offset, ts, partition=0):
    return msg(P_RT, offset, ts, rec(station, "station_realtime_data", {"sendTime": h, "v": v}, key=h, op="hourly"),
               partition=partition)


def test_hourly_message_with_only_newest_hour_keeps_history(small):
    small.apply([msg(P_RT, 1, T0, *[rec(S1, "station_realtime_data", {"v": i}, key=hour(i), op="hourly")
                                    for i in range(3)])], T0)
    small.apply([rt(S1, hour(3), 3, 2, T0 + 1)], T0)
    got = small.read_windows(S1, ["station_realtime_data"])["station_realtime_data"]
    assert sorted(got) == [hour(i) for i in range(4)]
    assert got[hour(3)]["payload"]["v"] == 3 and got[hour(0)]["payload"]["v"] == 0


def test_hourly_keeps_newest_window_and_counts_ignored(small, r):
    small.apply([rt(S1, hour(10), 10, 1, T0)], T0)
    res = small.apply([rt(S1, hour(5), 5, 2, T0 + 1), rt(S1, hour(6), 6, 3, T0 + 2)], T0)
    assert res.hours_ignored == 1  # hour 5 is older than 10 - 5 + 1
    small.apply([rt(S1, hour(12), 12, 4, T0 + 3)], T0)  # window moves: 8..12
    got = small.read_windows(S1, ["station_realtime_data"])["station_realtime_data"]
    assert sorted(got) == [hour(10), hour(12)]
    assert sorted(r.hkeys(Keys().hourly_ts(S1, "station_realtime_data"))) == [hour(10).encode(), hour(12).encode()]
    small.flush_counters()
    assert Counters(r).get(f"topic:{P_RT}")["hours_ignored"] == 1  # every bucket summed (Redis Cluster)


def test_hourly_newest_record_wins_per_hour(small):
    small.apply([rt(S1, hour(1), "new", 1, T0 + 100, partition=1)], T0)
    small.apply([rt(S1, hour(1), "old", 1, T0, partition=0)], T0)
    got = small.read_windows(S1, ["station_realtime_data"])["station_realtime_data"]
    assert got[hour(1)]["payload"]["v"] == "new"


# ---- devices -----------------------------------------------------------------------------------

def dev(station, key, offset, ts, v=0):
    return msg(P_DCDC, offset, ts, rec(station, "device_host_dcdc", {"hostCode": key, "v": v}, key=key, op="devices"))


def test_devices_cap_drops_least_recently_updated(small):
    for i, h in enumerate(["H1", "H2", "H3"]):
        small.apply([dev(S1, h, i, T0 + i)], T0 + 10)
    small.apply([dev(S1, "H1", 3, T0 + 5, v=1)], T0 + 10)  # H1 refreshed: H2 is now the oldest
    small.apply([dev(S1, "H4", 4, T0 + 6)], T0 + 10)
    got = small.read_windows(S1, ["device_host_dcdc"])["device_host_dcdc"]
    assert sorted(got) == ["H1", "H3", "H4"]
    assert got["H1"]["payload"]["v"] == 1


def test_devices_older_than_ttl_removed_on_write(ws):
    ws.apply([dev(S1, "H1", 1, T0), dev(S1, "H2", 2, T0 + 30_000)], T0 + 30_000)
    assert ws.present([S1], ["device_host_dcdc"], now_ms=T0 + 80_000)[S1] == {"device_host_dcdc"}
    assert ws.present([S1], ["device_host_dcdc"], now_ms=T0 + 100_000)[S1] == set()  # both older than 60 s
    ws.apply([dev(S1, "H3", 3, T0 + 70_000)], T0 + 70_000)  # H1 is 70 s older than H3: removed
    got = ws.read_windows(S1, ["device_host_dcdc"])["device_host_dcdc"]
    assert sorted(got) == ["H2", "H3"]


def test_offsets_and_timestamps_compare_as_numbers_across_digit_counts(ws):
    """The scripts compare offsets and timestamps as decimal strings, length first: 9 < 10
    and 999 < 1000 must hold although '9' > '10' as text."""
    ws.apply([dev(S1, "H1", 9, 999, v="old")], 1_000)
    res = ws.apply([dev(S1, "H1", 10, 1_000, v="new")], 1_000)
    assert (res.applied, res.replays_skipped) == (1, 0)
    assert ws.read_windows(S1, ["device_host_dcdc"])["device_host_dcdc"]["H1"]["payload"]["v"] == "new"
    res = ws.apply([dev(S1, "H1", 9, 999, v="old")], 1_000)  # offset 9 <= high-water mark 10
    assert res.replays_skipped == 1
    res = ws.apply([dev(S1, "H1", 11, 999, v="older")], 1_000)  # new offset, older record
    assert (res.applied, res.superseded) == (0, 1)
    assert ws.read_windows(S1, ["device_host_dcdc"])["device_host_dcdc"]["H1"]["payload"]["v"] == "new"
    ws.apply([msg(P_PARAM, 99, 99_999, rec(S1, "station_param", {"v": 1}))], 1_000)
    ws.apply([msg(P_PARAM, 100, 100_000, rec(S1, "station_param", {"v": 2}))], 1_000)
    ws.apply([msg(P_PARAM, 101, 99_999, rec(S1, "station_param", {"v": 3}))], 1_000)
    assert ws.read_windows(S1, ["station_param"])["station_param"]["payload"] == {"v": 2}


def test_negative_timestamp_is_refused(ws):
    with pytest.raises(StoreError, match="negative timestamp"):
        ws.apply([dev(S1, "H1", 1, -1)], T0)


# ---- global ------------------------------------------------------------------------------------

def cal(offset, ts, *dates, hol=0):
    return msg(P_CAL, offset, ts, *[rec(None, "environment_calendar", {"date": d, "isHoliday": hol}, key=d, op="global")
                                  for d in dates])


def test_calendar_update_reaches_existing_and_new_stations(ws):
    ws.apply([msg(P_PARAM, 1, T0, rec(S1, "station_param", {"v": 1}))], T0)
    res = ws.apply([cal(1, T0, "2025-11-11", "2025-11-12")], T0)
    assert [(t.station_id, t.alias) for t in res.triggers] == [(None, "environment_calendar")]
    ws.apply([msg(P_PARAM, 2, T0, rec(S2, "station_param", {"v": 2}))], T0)
    for s in (S1, S2):
        cal_w = ws.read_station(s, ["load_prediction"], T0).windows_for("load_prediction")["environment_calendar"]
        assert sorted(cal_w) == ["2025-11-11", "2025-11-12"]
    ws.apply([cal(2, T0 + 1, "2025-11-12", hol=1)], T0)  # a push with some dates erases none
    w = ws.read_windows(S2, ["environment_calendar"])["environment_calendar"]
    assert sorted(w) == ["2025-11-11", "2025-11-12"] and w["2025-11-12"]["payload"]["isHoliday"] == 1
    assert ws.present([S1, S2, "unknown"], ["environment_calendar"])["unknown"] == {"environment_calendar"}
    assert sorted(ws.stations()) == sorted([S1, S2])


def test_global_keeps_newest_dates(small):
    res = small.apply([cal(1, T0, *[f"2025-01-0{i}" for i in range(1, 7)])], T0)
    w = small.read_windows(S1, ["environment_calendar"])["environment_calendar"]
    assert sorted(w) == [f"2025-01-0{i}" for i in range(3, 7)]
    res = small.apply([cal(2, T0, "2024-12-31")], T0)
    assert res.applied == 0
    assert "2024-12-31" not in small.read_windows(S1, ["environment_calendar"])["environment_calendar"]


# ---- orders ------------------------------------------------------------------------------------

def order(station, offset, ts, tx="tx", partition=0):
    return msg(P_ORDER, offset, ts, rec(station, "car_order", {"transactionSerialNo": tx, "o": offset}, op="orders"),
               partition=partition)


def seconds_for(ws, module, station=S1):
    w = ws.read_station(station, [module]).windows_for(module)["car_order"]
    return [(s["seq"], s["second"], s["late"], [o["payload"]["o"] for o in s["orders"]]) for s in w or []]


def test_orders_second_closes_when_a_later_second_arrives(ws):
    res = ws.apply([order(S1, 1, T0), order(S1, 2, T0 + 400)], T0)
    assert res.triggers == []  # joining the open second triggers nothing
    assert ws.present([S1], ["car_order"])[S1] == set()
    res = ws.apply([order(S1, 3, T0 + 1200)], T0 + 100)
    assert [(t.alias, t.source.offset) for t in res.triggers] == [("car_order", 2)]  # source: last order of it
    assert seconds_for(ws, "station_guidance") == [(1, T0 // 1000, False, [1, 2])]
    assert ws.present([S1], ["car_order"])[S1] == {"car_order"}


def test_orders_window_none_until_a_second_is_closed_then_empty_when_all_delivered(ws):
    def window(module):
        return ws.read_station(S1, [module]).windows_for(module)["car_order"]

    assert window("station_guidance") is None  # nothing stored: the input is missing
    ws.apply([order(S1, 1, T0)], T0)
    assert window("station_guidance") is None  # an open second is not stored data yet
    ws.apply([order(S1, 2, T0 + 1000)], T0)  # closes T0
    got = window("station_guidance")
    assert [(s["seq"], s["second"]) for s in got] == [(1, T0 // 1000)]
    ws.advance_cursor(S1, "station_guidance", "car_order", 1)
    assert window("station_guidance") == []  # stored, none new for this module
    assert [s["seq"] for s in window("electricity_price")] == [1]  # other modules keep theirs
    assert ws.read_windows(S1, ["car_order"])["car_order"][0]["seq"] == 1
    assert ws.read_windows(S2, ["car_order"])["car_order"] == []


def test_late_orders_form_their_own_closed_bucket(ws):
    ws.apply([order(S1, 1, T0), order(S1, 2, T0 + 1000)], T0)  # closes T0, opens T0+1
    res = ws.apply([order(S1, 3, T0 - 3000), order(S1, 4, T0 + 100)], T0 + 10)
    assert res.late_orders == 2
    assert [t.source.offset for t in res.triggers] == [3, 4]
    assert seconds_for(ws, "evaluation_model") == [
        (1, T0 // 1000, False, [1]), (2, T0 // 1000 - 3, True, [3]), (3, T0 // 1000, True, [4])]


def test_close_expired_orders_and_cursors(ws):
    ws.apply([order(S1, 1, T0), order(S2, 1, T0, partition=1)], T0)
    assert ws.close_expired_orders(T0 + 1999) == []
    trig = ws.close_expired_orders(T0 + 2000)
    assert sorted((t.station_id, t.source.offset) for t in trig) == [(S1, 1), (S2, 1)]
    assert ws.close_expired_orders(T0 + 5000) == []
    assert seconds_for(ws, "station_guidance") == [(1, T0 // 1000, False, [1])]
    ws.advance_cursor(S1, "station_guidance", "car_order", 1)
    assert seconds_for(ws, "station_guidance") == []
    assert len(seconds_for(ws, "evaluation_model")) == 1  # cursors are per module
    assert ws.advance_cursor(S1, "station_guidance", "car_order", 0) == 1  # never moves back
    # an order of the same second after the deadline is late: the second closed at its deadline
    res = ws.apply([order(S1, 2, T0 + 500)], T0 + 6000)
    assert res.late_orders == 1


def test_expired_open_second_closes_on_next_apply(ws):
    ws.apply([order(S1, 1, T0)], T0)
    res = ws.apply([order(S1, 2, T0 + 3500)], T0 + 2500)  # deadline passed before this order
    assert [t.source.offset for t in res.triggers] == [1]
    assert ws.close_expired_orders(T0 + 3000) == []  # its index entry is only cleaned up


def test_orders_evicted_undelivered_are_counted(small):
    for i in range(5):
        small.apply([order(S1, i, T0 + i * 1000)], T0 + i * 1000)
    # 4 closed seconds (0..3), cap 3: second 0 evicted before any module got it
    res = small.apply([order(S1, 9, T0 + 9000)], T0 + 9000)
    assert res.seconds_evicted == 1
    assert [s[0] for s in seconds_for(small, "station_guidance")] == [3, 4, 5]
    for m in small._order_modules["car_order"].split(","):
        small.advance_cursor(S1, m, "car_order", 5)
    res = small.apply([order(S1, 10, T0 + 10_000)], T0 + 10_000)
    assert res.seconds_evicted == 0  # evicted, but every module had it


def test_concurrent_closers_close_each_second_once(ws, r):
    stations = [f"s{i}" for i in range(40)]
    ws.apply([order(s, i, T0 + 10) for i, s in enumerate(stations)], T0)
    stores = [WindowStore(r, ws.catalogue) for _ in range(4)]
    got: list = []
    lock = threading.Lock()

    def run(st):
        for _ in range(3):
            t = st.close_expired_orders(T0 + 2000, limit=15)
            with lock:
                got.extend(t)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(t.station_id for t in got) == sorted(stations)
    for s in stations:
        assert [x[0] for x in seconds_for(ws, "station_guidance", s)] == [1]
    assert r.zcard(Keys().orders_due("car_order")) == 0


# ---- idempotency -----------------------------------------------------------------------------

def traffic(n: int, seed: int, orders: bool = True):
    """n messages over 2 partitions with distinct record timestamps: latest, hourly, devices,
    global, outputs and (optionally) orders for a handful of stations."""
    rnd = random.Random(seed)
    stations = [f"10534055394023874{i:02d}" for i in range(6)]
    ts_pool = rnd.sample(range(T0, T0 + 3_600_000), n)
    offsets = {0: 0, 1: 0}
    out = []
    for i in range(n):
        p = rnd.randrange(2)
        off = offsets[p]
        offsets[p] += 1
        ts = ts_pool[i]
        s = rnd.choice(stations)
        kinds = ["param", "rt", "dev", "cal", "out"] + (["order"] * 3 if orders else [])
        k = rnd.choice(kinds)
        if k == "param":
            m = msg(P_PARAM, off, ts, rec(s, "station_param", {"i": i}), partition=p)
        elif k == "rt":
            hs = sorted(rnd.sample(range(200), rnd.randint(1, 3)))
            m = msg(P_RT, off, ts, *[rec(s, "station_realtime_data", {"i": i, "h": h}, key=hour(h), op="hourly")
                                     for h in hs], partition=p)
        elif k == "dev":
            h = f"H{rnd.randrange(5)}"
            m = msg(P_DCDC, off, ts, rec(s, "device_host_dcdc", {"hostCode": h, "i": i}, key=h, op="devices"),
                    partition=p)
        elif k == "cal":
            d = f"2025-12-{rnd.randint(1, 28):02d}"
            m = msg(P_CAL, off, ts, rec(None, "environment_calendar", {"date": d, "i": i}, key=d, op="global"),
                    partition=p)
        elif k == "out":
            m = msg(P_LOAD, off, ts, rec(s, "load_prediction", {"station_id": s, "i": i}), partition=p)
        else:
            m = order(s, off, T0 + (i // 10) * 1000 + rnd.randrange(1000), partition=p)
        out.append(m)
    return out


def deliver(ws, messages, batch=50, now=T0 + 3_600_000):
    results = []
    for i in range(0, len(messages), batch):
        results.append(ws.apply(messages[i:i + batch], now))
    return results


def trig(results):
    return [(t.station_id or "", t.alias, t.source.coords()) for res in results for t in res.triggers]


def test_replaying_1000_messages_changes_nothing(ws, r):
    msgs = traffic(1000, seed=7)
    first = deliver(ws, msgs)
    before = dump(r)
    again = deliver(ws, msgs, batch=73)
    assert dump(r) == before
    assert sum(x.replays_skipped for x in again) == sum(len(m[1]) for m in msgs)
    assert sum(x.applied for x in again) == 0
    # triggers are recomputed from content: the same set on replay
    assert sorted(trig(again)) == sorted(trig(first))


def test_shuffled_across_partitions_equals_single_delivery(r):
    cat = Catalogue.build()
    msgs = traffic(1000, seed=11, orders=False)
    ws = WindowStore(r, cat, prefix="a")
    deliver(ws, msgs)
    single = {k[2:]: v for k, v in dump(r, "a").items() if k.startswith("a:")}
    rnd = random.Random(3)
    parts = {0: [m for m in msgs if m[0].partition == 0], 1: [m for m in msgs if m[0].partition == 1]}
    mixed = []
    while parts[0] or parts[1]:
        p = rnd.choice([q for q in (0, 1) if parts[q]])
        mixed.append(parts[p].pop(0))
    ws_b = WindowStore(r, cat, prefix="b")
    deliver(ws_b, mixed, batch=37)
    deliver(ws_b, mixed[:500], batch=100)  # and a partial replay on top
    shuffled = {k[2:]: v for k, v in dump(r, "b").items() if k.startswith("b:")}
    assert shuffled == single


def test_calls_grouping_stations_equal_one_call_per_station(r, monkeypatch):
    """Many stations per script call (single Redis) and one per call (cluster) store the same."""
    cat = Catalogue.build()
    msgs = traffic(1000, seed=5)
    calls: dict[str, list[int]] = {}
    group = PollWrite.group

    def spy(self, *args):
        out = list(group(self, *args))
        calls.setdefault(self.store.keys.prefix, []).append(len(out))
        return iter(out)

    monkeypatch.setattr(PollWrite, "group", spy)
    runs = {}
    for prefix, opts in (("a", {"cluster": True}), ("b", {"call_records": 7}), ("c", {})):
        ws = WindowStore(r, cat, prefix=prefix, **opts)
        results = deliver(ws, msgs, batch=60)
        results.append(ws.apply(msgs[:300], T0 + 3_600_000))  # a replay, grouped the same way
        ws.flush_counters()
        state = {k[2:]: v for k, v in dump(r, prefix).items() if k.startswith(f"{prefix}:")}
        counters = {k.decode()[len(prefix):]: r.hgetall(k) for k in r.scan_iter(match=f"{prefix}:counters:*")}
        counts = [(x.applied, x.superseded, x.replays_skipped, x.hours_ignored, x.late_orders,
                   x.seconds_evicted) for x in results]
        runs[prefix] = (state, counters, counts, trig(results))
    assert runs["a"] == runs["b"] == runs["c"]
    assert runs["a"][1]  # counters were written
    assert runs["a"][2][-1][2] == sum(len(m[1]) for m in msgs[:300])  # the replay skipped every record
    # per station (and per global alias) under cluster; otherwise calls of whole stations
    # growing from FIRST_CALL_RECORDS by CALL_GROWTH up to 200 records (at most 5 per batch here)
    assert min(calls["a"]) >= 4 and max(calls["c"]) <= 5
    assert sum(calls["b"]) > sum(calls["c"])


def test_meta_ttl_refreshed_every_64th_and_outlives_windows(r):
    week = 7 * 86_400_000
    # every window expires within a week, so the meta hash may expire too (a week + 1/64)
    cat = Catalogue.build(topic_overrides={a: {"retention_s": 3600 * 24 * 7}
                                           for a in ("station_param", "environment_calendar", "car_price")})
    ws = WindowStore(r, cat)
    meta = Keys().meta(S1)
    ttl = week + week // 64
    ws.apply([dev(S1, "H1", 1, T0)], T0)
    assert ttl - 5_000 < r.pttl(meta) <= ttl
    assert r.pttl(Keys().devices(S1, "device_host_dcdc")) <= week < ttl
    r.pexpire(meta, 600_000)
    ws.apply([dev(S1, "H1", 2, T0 + 60_000)], T0 + 60_000)
    assert r.pttl(meta) <= 600_000
    later = T0 + week // 64
    ws.apply([dev(S1, "H1", 3, later)], later)
    assert ttl - 5_000 < r.pttl(meta) <= ttl
    assert r.hget(meta, "hwm:SCHEDULE-DEVICE-HOST-DCDC:0") == b"3"


# ---- the store against the pure model (parsers.windows) ---------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_store_matches_pure_window_model(small, seed):
    cat = small.catalogue
    rnd = random.Random(seed)
    rt_size = cat.by_alias["station_realtime_data"].window_size
    dev_spec = cat.by_alias["device_host_dcdc"]
    cal_size = cat.by_alias["environment_calendar"].window_size
    mods = tuple(small._order_modules["car_order"].split(","))
    hourly: dict = {}
    devices: dict = {}
    glob: dict = {}
    book = model.OrderBook(size=cat.by_alias["car_order"].window_size, order_close_s=2.0, modules=mods)
    ignored = 0
    offset = 0
    now = T0
    for _ in range(300):
        offset += 1
        now += rnd.randrange(0, 900)
        ts = now + rnd.randrange(-3000, 500)
        k = rnd.randrange(4)
        if k == 0:
            h = hour(rnd.randrange(0, 12))
            topic = P_RT
            r_ = rec(S1, "station_realtime_data", {"o": offset}, key=h, op="hourly")
            hourly, ig = model.upsert_hourly(hourly, h, model.make_item(ts, f"{topic}:0:{offset}", r_.payload), rt_size)
            ignored += ig
        elif k == 1:
            key = f"H{rnd.randrange(5)}"
            topic = P_DCDC
            r_ = rec(S1, "device_host_dcdc", {"o": offset}, key=key, op="devices")
            item = model.make_item(ts, f"{topic}:0:{offset}", r_.payload)
            devices = model.upsert_device(devices, key, item, dev_spec.window_size,
                                          model.device_expiry(devices, item, dev_spec.ttl_s, now))
        elif k == 2:
            key = f"2025-01-{rnd.randrange(1, 10):02d}"
            topic = P_CAL
            r_ = rec(None, "environment_calendar", {"o": offset}, key=key, op="global")
            glob, _ = model.upsert_global(glob, key, model.make_item(ts, f"{topic}:0:{offset}", r_.payload), cal_size)
        else:
            topic = P_ORDER
            r_ = rec(S1, "car_order", {"o": offset}, op="orders")
            book.close_expired(now)
            book.add(model.make_item(ts, f"{topic}:0:{offset}", r_.payload), now)
        small.apply([(Source(topic, 0, offset, ts), [r_])], now)
        if rnd.random() < 0.1:
            small.close_expired_orders(now)
            book.close_expired(now)
        if rnd.random() < 0.05:
            m = rnd.choice(mods)
            got = seconds_for(small, m)
            if got:
                small.advance_cursor(S1, m, "car_order", got[-1][0])
                book.advance(m, got[-1][0])
    w = small.read_windows(S1, ["station_realtime_data", "device_host_dcdc", "environment_calendar", "car_order"])
    assert w["station_realtime_data"] == hourly
    assert w["device_host_dcdc"] == devices
    assert w["environment_calendar"] == glob
    assert [(c["seq"], c["second"], c["late"], c["orders"]) for c in w["car_order"]] == \
        [(c.seq, c.second, c.late, c.orders) for c in book.closed]
    small.flush_counters()
    counters = Counters(small.r).get(f"topic:{P_RT}")
    assert counters.get("hours_ignored", 0) == ignored
    oc = Counters(small.r).get(f"topic:{P_ORDER}")
    assert oc.get("late_orders", 0) == book.late_orders
    assert oc.get("seconds_evicted", 0) == book.evicted_undelivered


# ---- reads -------------------------------------------------------------------------------------

def test_read_station_reads_only_needed_windows_in_one_round_trip(ws, r, monkeypatch):
    ws.apply([
        msg(P_PARAM, 1, T0, rec(S1, "station_param", {"v": 1})),
        msg(P_METER, 1, T0, rec(S1, "device_meter", {"meterPower": 1.0})),
        rt(S1, hour(1), 1, 1, T0),
    ], T0)
    executed: list = []
    real = r.pipeline

    def spy(*a, **kw):
        p = real(*a, **kw)
        orig = p.execute

        def ex(*ea, **ekw):
            executed.append([c[0][0] for c in p.command_stack])
            return orig(*ea, **ekw)

        p.execute = ex
        return p

    monkeypatch.setattr(r, "pipeline", spy)
    sw = ws.read_station(S1, ["load_prediction"], T0)
    assert len(executed) == 1
    assert set(sw) == {"station_param", "station_realtime_data", "environment_calendar"}
    assert sw["station_param"]["payload"] == {"v": 1}
    assert set(sw["station_realtime_data"]) == {hour(1)}
    assert "device_meter" not in sw


def test_present_covers_every_kind_in_one_round_trip(ws):
    ws.apply([
        msg(P_PARAM, 1, T0, rec(S1, "station_param", {"v": 1})),
        rt(S1, hour(1), 1, 1, T0),
        dev(S1, "H1", 1, T0),
        order(S1, 1, T0), order(S1, 2, T0 + 1000),
        msg(P_LOAD, 1, T0, rec(S2, "load_prediction", {"station_id": S2})),
    ], T0)
    names = ["station_param", "station_realtime_data", "device_host_dcdc", "car_order", "load_prediction",
             "environment_calendar", "device_storage"]
    got = ws.present([S1, S2], names, now_ms=T0 + 1000)
    assert got == {S1: {"station_param", "station_realtime_data", "device_host_dcdc", "car_order"},
                   S2: {"load_prediction"}}


def test_scripts_reload_after_script_flush(ws, r):
    r.script_flush()
    res = ws.apply([msg(P_PARAM, 1, T0, rec(S1, "station_param", {"v": 1}))], T0)
    assert res.applied == 1
    r.script_flush()
    assert ws.read_station(S1, ["station_guidance"]).windows_for("station_guidance")["car_order"] is None


#: put in front of apply.lua (with common.lua) whose every `redis.call` becomes `checked`: a
#: call that refuses any key the script call did not declare in KEYS (Redis Cluster routes and
#: checks a script by them)
CHECKED = """local declared = {}
for _, k in ipairs(KEYS) do declared[k] = true end
local function checked(cmd, key, ...)
  if not declared[key] then error('undeclared key ' .. tostring(key) .. ' in ' .. cmd) end
  return redis.call(cmd, key, ...)
end
"""


def _checked(body: str) -> str:
    assert body.count("redis.call") == 2  # apply.lua's `call` and common.lua's evict_seconds
    return CHECKED + body.replace("redis.call", "checked")


def test_apply_script_touches_only_keys_declared_in_KEYS(r):
    """Every kind, two stations per call, hour and device eviction, order closes, late orders,
    replays (which re-read the closers) and TTL refreshes: no key outside KEYS."""
    from store.scripts import LuaScript

    small = WindowStore(r, Catalogue.build(topic_overrides=SMALL), outputs_keep=2)
    body = small.scripts["apply.lua"].body
    small.scripts["apply.lua"] = LuaScript("apply.lua", _checked(body))
    polls = [
        [msg(P_PARAM, 1, T0, rec(S1, "station_param", {"v": 1}), rec(S2, "station_param", {"v": 2})),
         msg(P_METER, 1, T0, rec(S1, "device_meter", {"i": 1}, op="append")),
         cal(1, T0, "2025-11-10", "2025-11-11"),
         msg(P_LOAD, 1, T0, rec(S2, "load_prediction", {"station_id": S2, "prediction": [1.0]})),
         order(S1, 1, T0), order(S2, 1, T0, partition=1)],
        [*(rt(S, hour(i), i, 10 + i, T0 + i) for S in (S1, S2) for i in range(7)),
         *(dev(S1, f"H{i}", 10 + i, T0 + i) for i in range(5)),
         order(S1, 2, T0 + 1000), order(S1, 3, T0 + 2000)],
        [order(S1, 2, T0 + 1000), order(S1, 3, T0 + 2000), order(S1, 4, T0 - 3000)],  # replays, a late order
        [cal(2, T0 + 86_400_000, "2025-11-12", "2025-11-13", "2025-11-14"),
         msg(P_PARAM, 2, T0 + 86_400_000, rec(S1, "station_param", {"v": 3}))],  # TTL refresh due
    ]
    got = [small.apply(poll, T0 + i * 86_400_000 // 2) for i, poll in enumerate(polls)]
    assert [(x.applied, x.replays_skipped, x.late_orders) for x in got] == [(8, 0, 0), (21, 0, 0), (1, 2, 1), (4, 0, 0)]
    assert len(small.read_windows(S1, ["device_host_dcdc"])["device_host_dcdc"]) == 3
    small.scripts["apply.lua"] = LuaScript("apply.lua", _checked(body).replace(
        "a.wkey = KEYS[kp]", "a.wkey = KEYS[kp] .. ':x'"))  # a key the script made up is refused
    with pytest.raises(Exception, match="undeclared key"):
        small.apply([msg(P_PARAM, 9, T0, rec(S1, "station_param", {"v": 9}))], T0)


def test_items_are_msgpack_with_source_coordinates(ws, r):
    ws.apply([msg(P_PARAM, 42, T0, rec(S1, "station_param", {"x": [1, 2]}), partition=3)], T0)
    item = decode_item(r.get(Keys().latest(S1, "station_param")))
    assert item == {"ts": T0, "src": f"{P_PARAM}:3:42", "payload": {"x": [1, 2]}}


def test_ttl_refreshed_on_creation_and_every_retention_64th(ws, r):
    k = Keys().devices(S1, "device_host_dcdc")
    week = 7 * 86_400_000
    ws.apply([dev(S1, "H1", 1, T0)], T0)
    assert week - 5_000 < r.pttl(k) <= week
    r.pexpire(k, 600_000)
    ws.apply([dev(S1, "H1", 2, T0 + 60_000)], T0 + 60_000)  # within week/64 of the last refresh
    assert r.pttl(k) <= 600_000
    later = T0 + week // 64 + 1
    ws.apply([dev(S1, "H1", 3, later)], later)
    assert week - 5_000 < r.pttl(k) <= week
    assert week - 5_000 < r.pttl(Keys().devices_ts(S1, "device_host_dcdc")) <= week
