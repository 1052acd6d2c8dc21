"""The reference window semantics (spec §6.1) that the store's scripts are compared against."""

from __future__ import annotations

import pytest

from parsers.windows import (
    OrderBook,
    append,
    apply_latest,
    hour_index,
    hour_key,
    hour_of,
    make_item,
    merge_hour_items,
    upsert_device,
    upsert_global,
    upsert_hourly,
    visible_devices,
)

pytestmark = pytest.mark.unit


def it(ts: int, payload="p", off: int = 0):
    return make_item(ts, f"T:0:{off}", payload)


def test_latest_newest_record_wins_and_ties_go_to_the_later_arrival() -> None:
    a, b, c = it(100, "a"), it(50, "b"), it(100, "c")
    cur = apply_latest(None, a)
    assert apply_latest(cur, b) is a
    assert apply_latest(cur, c) is c


def test_append_caps_oldest_first() -> None:
    w: list = []
    for i in range(5):
        w = append(w, it(i, i), 3)
    assert [x["payload"] for x in w] == [2, 3, 4]


def test_hour_helpers() -> None:
    assert hour_of("2025-11-19 09:35:12") == "2025-11-19 09:00:00"
    h = hour_index("2025-11-19 09:00:00")
    assert hour_key(h) == "2025-11-19 09:00:00"
    assert hour_key(h + 15) == "2025-11-20 00:00:00"
    assert hour_index("2024-03-01 00:00:00") - hour_index("2024-02-28 23:00:00") == 25  # leap day


def test_hourly_upsert_keeps_other_hours_and_newest_wins() -> None:
    w: dict = {}
    w, ign = upsert_hourly(w, "2025-11-19 09:00:00", it(10, "a"), 168)
    w, ign2 = upsert_hourly(w, "2025-11-19 10:00:00", it(11, "b"), 168)
    assert (ign, ign2) == (False, False) and sorted(w) == ["2025-11-19 09:00:00", "2025-11-19 10:00:00"]
    w, _ = upsert_hourly(w, "2025-11-19 09:00:00", it(5, "old"), 168)
    assert w["2025-11-19 09:00:00"]["payload"] == "a"
    w, _ = upsert_hourly(w, "2025-11-19 09:00:00", it(10, "tie"), 168)
    assert w["2025-11-19 09:00:00"]["payload"] == "tie"


def test_hourly_window_counts_back_from_the_newest_stored_hour() -> None:
    w: dict = {}
    w, _ = upsert_hourly(w, "2025-11-19 00:00:00", it(1), 3)
    w, _ = upsert_hourly(w, "2025-11-19 01:00:00", it(1), 3)
    w, _ = upsert_hourly(w, "2025-11-19 02:00:00", it(1), 3)
    w, ign = upsert_hourly(w, "2025-11-18 23:00:00", it(9), 3)  # older than the 3-hour window
    assert ign is True and len(w) == 3
    w, ign = upsert_hourly(w, "2025-11-19 04:00:00", it(1), 3)  # moves the window: 02..04
    assert ign is False
    assert sorted(w) == ["2025-11-19 02:00:00", "2025-11-19 04:00:00"]


def test_merge_single_item_is_identity() -> None:
    el = {"stationId": "S", "sendTime": "2025-11-19 09:00:00"}
    assert merge_hour_items([el]) is el


def test_merge_gun_without_values_gets_none() -> None:
    m = merge_hour_items([
        {"gunPower": {"gunNo": ["01"], "outputPowerPerGunAvg": [1.0], "outputPowerPerGunMax": [2.0]}},
        {"gunPower": {"gunNo": ["02"]}},
    ])
    assert m["gunPower"] == {"gunNo": ["01", "02"], "outputPowerPerGunAvg": [1.0, None],
                             "outputPowerPerGunMax": [2.0, None]}


def test_devices_upsert_cap_and_expiry() -> None:
    w: dict = {}
    w = upsert_device(w, "H1", it(100, "h1"), 2)
    w = upsert_device(w, "H2", it(200, "h2"), 2)
    w = upsert_device(w, "H1", it(50, "h1-old"), 2)
    assert w["H1"]["payload"] == "h1"
    w = upsert_device(w, "H3", it(300, "h3"), 2)  # beyond cap: least recently updated (H1) goes
    assert sorted(w) == ["H2", "H3"]
    w = upsert_device(w, "H4", it(400, "h4"), 10, expire_before_ms=250)
    assert sorted(w) == ["H3", "H4"]


def test_visible_devices_hide_records_older_than_ttl() -> None:
    w = {"A": it(1_000), "B": it(59_000), "C": it(61_000)}
    assert sorted(visible_devices(w, 60, 120_000)) == ["C"]
    assert sorted(visible_devices(w, None, 10**12)) == ["A", "B", "C"]
    assert visible_devices(None, 60, 0) == {}


def test_global_upsert_keeps_newest_dates() -> None:
    w: dict = {}
    for d in ("2025-01-03", "2025-01-01", "2025-01-02"):
        w, ign = upsert_global(w, d, it(1, d), 2)
    assert sorted(w) == ["2025-01-02", "2025-01-03"]
    w, ign = upsert_global(w, "2024-12-31", it(2), 2)
    assert ign is True
    w, ign = upsert_global(w, "2025-01-02", it(0, "older"), 2)
    assert ign is False and w["2025-01-02"]["payload"] == "2025-01-02"


# ---- orders -------------------------------------------------------------------------------------

def test_orders_close_on_a_later_second() -> None:
    ob = OrderBook(size=10, modules=("m",))
    assert ob.add(it(10_100, "a"), now_ms=0) == []
    assert ob.add(it(10_900, "b"), now_ms=0) == []
    closed = ob.add(it(11_000, "c"), now_ms=0)
    assert [(c.seq, c.second, c.late, [o["payload"] for o in c.orders]) for c in closed] == [
        (1, 10, False, ["a", "b"])]
    assert ob.open_second == 11


def test_orders_close_on_wall_clock() -> None:
    ob = OrderBook(order_close_s=2.0)
    ob.add(it(10_100), now_ms=1_000)
    assert ob.close_expired(2_999) == []
    closed = ob.close_expired(3_000)
    assert [(c.seq, c.second) for c in closed] == [(1, 10)]
    assert ob.close_expired(10_000) == []
    # an order of the same second after it closed is late
    late = ob.add(it(10_500, "late"), now_ms=10_000)
    assert [(c.seq, c.second, c.late) for c in late] == [(2, 10, True)]
    assert ob.late_orders == 1


def test_orders_older_than_the_open_second_are_late_buckets() -> None:
    ob = OrderBook()
    ob.add(it(20_000, "open"), now_ms=0)
    late = ob.add(it(19_999, "old"), now_ms=0)
    assert [(c.second, c.late, [o["payload"] for o in c.orders]) for c in late] == [(19, True, ["old"])]
    assert ob.open_second == 20 and [o["payload"] for o in ob.open_orders] == ["open"]


def test_cursors_deliver_every_closed_second_once() -> None:
    ob = OrderBook(size=120, modules=("a", "b"))
    for s in range(5):
        ob.add(it(s * 1000), now_ms=0)
    assert [c.second for c in ob.pending_for("a")] == [0, 1, 2, 3]
    ob.advance("a", 4)
    ob.add(it(9_000), now_ms=0)
    assert [c.second for c in ob.pending_for("a")] == [4]
    assert [c.second for c in ob.pending_for("b")] == [0, 1, 2, 3, 4]
    ob.advance("a", 2)  # never moves back
    assert ob.cursors["a"] == 4


def test_eviction_counts_undelivered_seconds() -> None:
    ob = OrderBook(size=2, modules=("a",))
    for s in range(5):
        ob.add(it(s * 1000), now_ms=0)
    assert [c.second for c in ob.closed] == [2, 3]
    assert (ob.evicted, ob.evicted_undelivered) == (2, 2)
    ob.advance("a", 4)
    ob.add(it(7_000), now_ms=0)
    assert (ob.evicted, ob.evicted_undelivered) == (3, 2)
    assert [c.as_dict()["seq"] for c in ob.closed] == [4, 5]
