"""A Redis restart empties the script cache: every scripted store call must re-load its
script and re-run with the same arguments (found by the Redis-restart scenario, where the
order closer crashed the ingester with "value is not an integer or out of range")."""

from __future__ import annotations

from typing import Any

import pytest

from parsers.catalogue import Catalogue
from parsers.records import Record, Source
from store.windows import WindowStore

pytestmark = pytest.mark.faults


def _order(station: str, offset: int, ts: int) -> tuple[Source, list[Record]]:
    cat = Catalogue.build()
    topic = cat.by_alias["car_order"].topic
    payload = {"stationId": station, "transactionSerialNo": "T1", "soc": 50.0}
    return Source(topic, 0, offset, ts), [Record(station, "car_order", "orders", None, payload)]


def test_order_closer_survives_a_flushed_script_cache(redis_client: Any) -> None:
    store = WindowStore(redis_client, Catalogue.build(), "sr")
    t0 = 1_763_500_000_000
    store.apply([_order("S1", 0, t0), _order("S2", 1, t0 + 10)], now_ms=t0)
    redis_client.script_flush()  # what a restart without the scripts does
    triggers = store.close_expired_orders(t0 + 60_000)
    assert sorted((t.station_id, t.alias, t.source.offset) for t in triggers) == [
        ("S1", "car_order", 0), ("S2", "car_order", 1)]
    seconds = store.read_windows("S1", ["car_order"])["car_order"]
    assert [(s["second"], [o["src"] for o in s["orders"]]) for s in seconds] == [
        (t0 // 1000, [f"{Catalogue.build().by_alias['car_order'].topic}:0:0"])]
