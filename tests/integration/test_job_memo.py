"""The worker's window memo (store.memo): a job with it builds exactly the inputs a job without
it builds, for random windows, after rewrites, after TTL expiry and across a Redis restart."""

from __future__ import annotations

import random
import time

import orjson
import redis

from parsers.catalogue import Catalogue
from parsers.envelopes import parse_message
from parsers.inputs import build_input
from parsers.records import Source
from store.memo import HourlyMemo
from store.windows import WindowStore

CAT = Catalogue.build()
MODULES = ("load_prediction", "SOH_model", "electricity_price", "thermal_management")
STATIONS = ("4100000000000000001", "4100000000000000002", "4100000000000000003")
NOW = int(time.time() * 1000)


class Writer:
    def __init__(self, store: WindowStore) -> None:
        self.store = store
        self.offset = 0

    def write(self, alias: str, value: object) -> None:
        spec = CAT.topic(alias)
        self.offset += 1
        recs = parse_message(spec, orjson.dumps(value)).records
        self.store.apply([(Source(spec.topic, 0, self.offset, NOW - 1000 + self.offset), recs)], NOW)


def _num(rng: random.Random) -> object:
    return rng.choice([rng.uniform(0, 500), rng.randint(0, 300), None, "n/a"])


def random_hours(rng: random.Random, station: str) -> dict:
    day0 = rng.randint(1, 20)
    hours = rng.sample(range(0, 24 * 9), rng.randint(1, 40))
    rows = []
    for h in hours:
        guns = rng.sample(["01", "02", "03", "04", "05"], rng.randint(0, 4))
        rows.append({"stationId": station, "sendTime": f"2025-11-{day0 + h // 24:02d} {h % 24:02d}:00:00",
                     "outputPowerPerStationAvg": _num(rng), "outputPowerPerStationMax": _num(rng),
                     "gunPower": {"gunNo": guns, "outputPowerPerGunAvg": [_num(rng) for _ in guns],
                                  "outputPowerPerGunMax": [_num(rng) for _ in guns]}})
    return {"realTimeData": rows}


def random_calendar(rng: random.Random) -> dict:
    days = rng.sample(range(1, 29), rng.randint(1, 28))
    return {"calendar": [{"date": f"2025-{rng.randint(1, 12):02d}-{d:02d}", "isHoliday": rng.randint(0, 1),
                          "isWeekend": rng.randint(0, 1)} for d in days]}


def inputs(store: WindowStore, station: str, memo: HourlyMemo | None) -> dict[str, dict]:
    windows = store.read_station(station, MODULES, NOW, memo=memo)
    shared: dict = {}
    return {m: build_input(CAT, m, station, windows.windows_for(m), NOW, shared) for m in MODULES}


def assert_same(store: WindowStore, memo: HourlyMemo) -> None:
    for s in STATIONS:
        cached = inputs(store, s, memo)
        assert cached == inputs(store, s, None), f"station {s}: memoised inputs differ"
        # a module that changes its input in place changes nobody else's: not the next job's
        for inp in cached.values():
            grid = inp["topics"].get("station_realtime_data")
            if grid:
                grid["sendTime"].append("x")
                for row in grid["outputPowerPerGunAvg"]:
                    row.append(-1)
            for rec in inp["topics"].get("environment_calendar") or []:
                rec["isHoliday"] = 99
        assert inputs(store, s, memo) == inputs(store, s, None), f"station {s}: a module's change leaked"


def test_memoised_inputs_equal_fresh_ones_for_random_windows(redis_client):
    rng = random.Random(17)
    store = WindowStore(redis_client, CAT)
    memo = HourlyMemo(max_entries=2)  # fewer than the stations: evictions happen too
    w = Writer(store)
    for round_ in range(12):
        if round_ == 0 or rng.random() < 0.5:
            w.write("environment_calendar", random_calendar(rng))
        for s in rng.sample(STATIONS, rng.randint(0, len(STATIONS))):
            w.write("station_realtime_data", random_hours(rng, s))
        assert_same(store, memo)
    assert memo.hits > 0 and memo.misses > 0 and len(memo) <= 2


def test_memo_follows_ttl_expiry_and_a_redis_restart(private_redis):
    rng = random.Random(71)
    r = redis.Redis.from_url(private_redis.url)
    store = WindowStore(r, CAT)
    memo = HourlyMemo()
    w = Writer(store)
    w.write("environment_calendar", random_calendar(rng))
    for s in STATIONS:
        w.write("station_realtime_data", random_hours(rng, s))
    assert_same(store, memo)
    assert_same(store, memo)  # every window memoised now
    hits = memo.hits

    # the windows expire (their TTL passed): the memo never answers for them
    r.delete(store.keys.hourly(STATIONS[0], "station_realtime_data"), store.keys.global_window("environment_calendar"))
    assert_same(store, memo)
    assert inputs(store, STATIONS[0], memo)["load_prediction"]["topics"]["station_realtime_data"] is None

    # a restart with the data kept (AOF): the same bytes, served from the memo
    private_redis.kill()
    private_redis.start()
    r = redis.Redis.from_url(private_redis.url)
    store = WindowStore(r, CAT)
    before = memo.hits
    assert_same(store, memo)
    assert memo.hits > before >= hits

    # a restart that lost the data, then different data under the same keys
    r.flushall()
    w = Writer(store)
    w.write("environment_calendar", random_calendar(rng))
    for s in STATIONS:
        w.write("station_realtime_data", random_hours(rng, s))
    assert_same(store, memo)


def test_memo_is_bounded_and_can_be_off(redis_client):
    store = WindowStore(redis_client, CAT)
    w = Writer(store)
    rng = random.Random(3)
    for s in STATIONS:
        w.write("station_realtime_data", random_hours(rng, s))
    memo = HourlyMemo(max_entries=1)
    for s in STATIONS:
        inputs(store, s, memo)
    assert len(memo) == 1
    off = HourlyMemo(max_entries=0)
    for s in STATIONS:
        assert inputs(store, s, off) == inputs(store, s, None)
    assert len(off) == 0 and off.hits == 0
