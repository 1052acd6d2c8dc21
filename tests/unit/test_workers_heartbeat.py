"""Heartbeat ticks (spec §6.5): once per period for every ready known station, scheduled by
exactly one of the processes that tick, with coalescing still applied."""

from __future__ import annotations

import json
import time

from parsers.catalogue import Catalogue
from parsers.envelopes import parse_message
from parsers.records import Source
from store.pending import PendingRuns
from store.tracker import BatchTracker
from store.windows import WindowStore
from workers import heartbeat

CAT = Catalogue.build(module_overrides={"customer_mining": {"heartbeat_s": 10},
                                        "pv_prediction": {"heartbeat_s": 10}})


def _known(r, stations, pv=()):
    """Register stations (an ACDC record each); `pv` ones also get PV + weather (pv_prediction ready)."""
    store = WindowStore(r, CAT)
    now = int(time.time() * 1000)
    msgs = []
    for i, s in enumerate(stations):
        v = json.dumps({"stationId": s, "hostCode": "H1", "acPower": 1.0}).encode()
        msgs.append((Source("SCHEDULE-DEVICE-HOST-ACDC", 0, i, now), parse_message(CAT.topic("device_host_acdc"), v).records))
    for i, s in enumerate(pv):
        v = json.dumps({"stationId": s, "pvId": "P", "pvPreDcPower": [1.0]}).encode()
        msgs.append((Source("SCHEDULE-DEVICE-PV", 0, i, now), parse_message(CAT.topic("device_pv"), v).records))
        w = json.dumps({"weather": [{"stationId": s, "weatherSituationTomorrow": "sunny"}]}).encode()
        msgs.append((Source("SCHEDULE-ENVIRONMENT-WEATHER", 0, i, now),
                     parse_message(CAT.topic("environment_weather"), w).records))
    store.apply(msgs, now)


def test_tick_schedules_every_ready_station_once_per_period(fake_redis):
    _known(fake_redis, ["S1", "S2", "S3"], pv=["S2"])
    res = heartbeat.tick(fake_redis, CAT, 1_000_005.0)
    assert sorted(res.ticks) == ["customer_mining:heartbeat:0:1000000", "pv_prediction:heartbeat:0:1000000"]
    assert res.runs == 4 and res.not_ready == 2  # 3 customer_mining + pv only where PV and weather exist
    tr = BatchTracker(fake_redis)
    assert sorted(json.loads(tr.get("customer_mining:heartbeat:0:1000000")["expected"])) == ["S1", "S2", "S3"]
    assert json.loads(tr.get("pv_prediction:heartbeat:0:1000000")["expected"]) == ["S2"]
    pend = PendingRuns(fake_redis).pending("S2")
    assert (pend["customer_mining"], pend["pv_prediction"]) == ("customer_mining:heartbeat:0:1000000",
                                                                "pv_prediction:heartbeat:0:1000000")

    # another process ticking in the same period schedules nothing
    again = heartbeat.tick(fake_redis, CAT, 1_000_009.9)
    assert (again.ticks, again.runs) == ([], 0)

    # next period: new batches, but stations whose previous run is still pending absorb it
    nxt = heartbeat.tick(fake_redis, CAT, 1_000_010.0)
    assert sorted(nxt.ticks) == ["customer_mining:heartbeat:0:1000010", "pv_prediction:heartbeat:0:1000010"]
    assert tr.get("customer_mining:heartbeat:0:1000010") == {}  # all absorbed: no batch
    counters = {k.decode(): int(v) for k, v in fake_redis.hgetall("sf:counters:heartbeat").items()}
    assert counters["ticks"] == 4 and counters["runs"] == 8


def test_no_heartbeat_module_means_no_work(fake_redis):
    _known(fake_redis, ["S1"])
    res = heartbeat.tick(fake_redis, Catalogue.build(), 1_000_005.0)
    assert (res.ticks, res.runs) == ([], 0)
    assert fake_redis.keys("sf:heartbeat:*") == []
