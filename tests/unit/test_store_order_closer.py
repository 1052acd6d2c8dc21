"""The order-second due index and its closer (store.order_closer). Runs on fakeredis+lupa here
and, unchanged, on a real redis-server from tests/integration/test_store_order_closer_redis.py."""

from __future__ import annotations

import pytest

from parsers.catalogue import Catalogue
from parsers.records import Record, Source
from store.keys import Keys, keys_for
from store.windows import WindowStore

T0 = 1_763_524_800_000
P_ORDER = "SCHEDULE-CAR-ORDER"
def due(r) -> list[str]:
    """Members of the car_order due index, every bucket of it (several on Redis Cluster)."""
    return [m.decode() for key in keys_for(r).orders_due_all("car_order") for m in r.zrange(key, 0, -1)]


def due_key(r, station: str) -> str:
    return keys_for(r).orders_due_of("car_order", station)


@pytest.fixture
def r(fake_redis):
    return fake_redis


def orders(stations: list[str], second: int, first_offset: int) -> list[tuple[Source, list[Record]]]:
    return [(Source(P_ORDER, 0, first_offset + i, T0 + second * 1000),
             [Record(s, "car_order", "orders", None, {"transactionSerialNo": s, "o": first_offset + i})])
            for i, s in enumerate(stations)]


def open_seconds(r, stations: list[str]) -> list[str]:
    k = Keys()
    return [s for s in stations if r.hexists(k.orders_state(s, "car_order"), "open")]


def test_due_index_forgets_seconds_closed_by_a_later_order(r):
    ws = WindowStore(r, Catalogue.build())
    stations = [f"s{i}" for i in range(30)]
    ws.apply(orders(stations, 0, 0), T0)
    ws.apply(orders(stations, 1, 100), T0 + 500)  # closes second 0 of every station
    ws.apply(orders(stations[:1], 1, 200), T0 + 600)  # the next round trip removes their members
    assert sorted(due(r)) == sorted(f"{s}|{T0 // 1000 + 1}" for s in stations)
    assert len(ws.close_expired_orders(T0 + 2500)) == 30
    assert due(r) == [] and open_seconds(r, stations) == []


def test_one_call_closes_every_due_second_behind_pages_of_closed_ones(r):
    # members of seconds that are closed already (left by another ingester that stopped before
    # removing them) fill whole pages ahead of the open seconds: the scan must go on past them
    writer = WindowStore(r, Catalogue.build())
    stations = [f"s{i:03d}" for i in range(150)]
    writer.apply(orders(stations, 0, 0), T0)
    writer.apply(orders(stations, 1, 1000), T0 + 500)
    assert len(due(r)) == 300
    closer = WindowStore(r, Catalogue.build())
    trig = closer.close_expired_orders(T0 + 3000, limit=40)
    assert sorted(t.station_id for t in trig) == stations
    assert open_seconds(r, stations) == [] and due(r) == []
    assert closer.close_expired_orders(T0 + 3000, limit=40) == []


def test_members_not_yet_due_by_their_state_are_kept_and_skipped(r):
    ws = WindowStore(r, Catalogue.build())
    ws.apply(orders(["a", "b", "c"], 0, 0), T0)
    # a member scored earlier than its second's deadline (a clock step between ingesters)
    r.zadd(due_key(r, "b"), {f"b|{T0 // 1000}": T0 - 5000})
    assert ws.close_expired_orders(T0 + 1000, limit=1) == []
    assert r.zscore(due_key(r, "b"), f"b|{T0 // 1000}") == T0 - 5000  # kept: its deadline is T0 + 2000
    assert sorted(t.station_id for t in ws.close_expired_orders(T0 + 2000, limit=1)) == ["a", "b", "c"]
    assert due(r) == []


def test_orders_due_count_sees_open_seconds_until_a_deadline(r):
    ws = WindowStore(r, Catalogue.build())
    ws.apply(orders(["a"], 0, 0), T0)
    ws.apply(orders(["b"], 0, 1), T0 + 1000)
    assert ws.orders_due_count(T0 + 1999) == 0
    assert ws.orders_due_count(T0 + 2000) == 1
    assert ws.orders_due_count(T0 + 3000) == 2
    ws.close_expired_orders(T0 + 3000)
    assert ws.orders_due_count(T0 + 10_000) == 0
