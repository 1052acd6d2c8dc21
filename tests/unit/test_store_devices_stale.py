"""Device records older than the TTL on arrival (a catch-up): stored, hidden while stale,
counted as stale_on_arrival, never as superseded. Runs on fakeredis+lupa here and, unchanged,
on a real redis-server from tests/integration/test_store_devices_stale_redis.py."""

from __future__ import annotations

import random

import pytest

from parsers import windows as model
from parsers.catalogue import Catalogue
from parsers.records import Record, Source
from store.keys import Keys
from store.windows import WindowStore

T0 = 1_763_524_800_000
P_DCDC = "SCHEDULE-DEVICE-HOST-DCDC"
P_STORAGE = "SCHEDULE-DEVICE-STORAGE"
MIN = 60_000


@pytest.fixture
def r(fake_redis):
    return fake_redis


def dev(station: str, key: str, offset: int, ts: int, v: int = 0, topic: str = P_DCDC, partition: int = 0):
    alias = "device_host_dcdc" if topic == P_DCDC else "device_storage"
    return (Source(topic, partition, offset, ts), [Record(station, alias, "devices", key, {"k": key, "v": v})])


def counters(r, topic: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(Keys().topic_counters(topic)).items()}


def test_records_minutes_old_are_stored_hidden_and_counted_apart(r):
    ws = WindowStore(r, Catalogue.build())
    now = T0 + 5 * MIN
    res = ws.apply([dev("S1", "H1", 0, T0 + 30_000), dev("S1", "H2", 1, T0 + 40_000),
                    dev("S1", "B1", 0, T0 + 35_000, topic=P_STORAGE)], now)
    assert (res.applied, res.superseded) == (3, 0)
    assert res.stale_on_arrival == {P_DCDC: 2, P_STORAGE: 1}
    w = ws.read_windows("S1", ["device_host_dcdc", "device_storage"])
    assert sorted(w["device_host_dcdc"]) == ["H1", "H2"] and sorted(w["device_storage"]) == ["B1"]
    assert ws.present(["S1"], ["device_host_dcdc"], now_ms=now)["S1"] == set()  # hidden while stale
    assert model.visible_devices(w["device_host_dcdc"], 60, now) == {}
    # an older record of H1 arrives (another partition): a real supersession, and stale as well
    res = ws.apply([dev("S1", "H1", 0, T0 + 10_000, v=9, partition=1)], now)
    assert (res.applied, res.superseded, res.stale_on_arrival) == (0, 1, {P_DCDC: 1})
    # a fresh record: neither
    res = ws.apply([dev("S1", "H3", 2, now - 1_000)], now)
    assert (res.applied, res.superseded, res.stale_on_arrival) == (1, 0, {})
    ws.flush_counters()
    assert counters(r, P_DCDC) == {"records_applied": 3, "records_superseded": 1, "stale_on_arrival": 3}
    assert counters(r, P_STORAGE) == {"records_applied": 1, "stale_on_arrival": 1}
    # H1 and H2 are more than the TTL older than H3, the station's newest record: removed now
    ws.apply([dev("S1", "H3", 3, now)], now)
    assert sorted(ws.read_windows("S1", ["device_host_dcdc"])["device_host_dcdc"]) == ["H3"]


def test_a_catch_up_keeps_every_device_within_the_ttl_of_the_newest_record(r):
    ws = WindowStore(r, Catalogue.build())
    # a backlog: records 5 to 2 minutes old, each host every 15 s, applied 1 minute later
    recs = [dev("S1", f"H{h}", i * 4 + h, T0 + i * 15_000 + h) for i in range(13) for h in range(4)]
    for i in range(0, len(recs), 7):
        res = ws.apply(recs[i:i + 7], T0 + 5 * MIN)
        assert res.superseded == 0
    got = ws.read_windows("S1", ["device_host_dcdc"])["device_host_dcdc"]
    assert {k: v["ts"] for k, v in got.items()} == {f"H{h}": T0 + 12 * 15_000 + h for h in range(4)}


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_catch_up_in_any_order_matches_the_pure_model(r, seed):
    """Records up to 5 minutes old on two partitions in random order: the store equals the
    model (parsers.windows.upsert_device with device_expiry) and counts stale and superseded
    records as the model says."""
    rnd = random.Random(seed)
    cat = Catalogue.build(topic_overrides={"device_host_dcdc": {"window_size": 4}})
    spec = cat.by_alias["device_host_dcdc"]
    ws = WindowStore(r, cat)
    window: dict = {}
    stale = superseded = 0
    offsets = [0, 0]
    now = T0 + 10 * MIN
    for _ in range(200):
        now += rnd.randrange(0, 2_000)
        p = rnd.randrange(2)
        ts = now - rnd.randrange(0, 5 * MIN)
        key = f"H{rnd.randrange(6)}"
        m = dev("S1", key, offsets[p], ts, v=offsets[p], partition=p)
        offsets[p] += 1
        item = model.make_item(ts, m[0].coords(), m[1][0].payload)
        if ts < now - 60_000:
            stale += 1
        if key in window and not model.wins(item, window[key]):
            superseded += 1
        window = model.upsert_device(window, key, item, spec.window_size,
                                     model.device_expiry(window, item, spec.ttl_s, now))
        ws.apply([m], now)
    assert ws.read_windows("S1", ["device_host_dcdc"])["device_host_dcdc"] == window
    ws.flush_counters()
    c = counters(r, P_DCDC)
    assert (c.get("stale_on_arrival", 0), c.get("records_superseded", 0)) == (stale, superseded)
    assert stale > 50  # the traffic is a catch-up
