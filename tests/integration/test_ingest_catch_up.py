"""Catching up on a backlog (record timestamps minutes old), against a real broker and a real
redis-server: every order second is closed when `--until-idle` exits."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kafkautil import CONSUMER_GROUP_TEST_SETTINGS, create_topics, produce, unique_catalogue

from ingest.service import build
from parsers.catalogue import Catalogue
from stationflow.commands.ingest_cmd import queue_depth, scheduler
from stationflow.settings import Settings
from store.keys import Keys
from store.windows import WindowStore

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
PREFIX = "cu"


def _settings(cat: Catalogue, bootstrap: str, redis_url: str, group: str) -> Settings:
    return Settings.from_dict({
        "prefix": PREFIX,
        "redis": {"url": redis_url},
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group, "consumer": dict(CONSUMER_GROUP_TEST_SETTINGS)},
        "topics": {t.alias: {"topic": t.topic} for t in cat.topics},
        "ingest": {"commit_interval_s": 0.2},
    })


def _ingest_until_idle(settings: Settings, until_idle_s: float) -> None:
    svc = build(settings, scheduler(settings), until_idle_s=until_idle_s, queue_depth=queue_depth(settings))
    assert svc.ingester.run() == 0


def _sample(topic: str) -> dict[str, Any]:
    return json.loads((SAMPLES / f"{topic}.json").read_text())


def test_until_idle_leaves_no_order_second_open(kafka_bootstrap: str, redis_client: Any, redis_url: str) -> None:
    cat = unique_catalogue()
    spec = cat.by_alias["car_order"]
    create_topics(kafka_bootstrap, [t.topic for t in cat.topics], partitions=2)
    settings = _settings(cat, kafka_bootstrap, redis_url, "g-orders-idle")
    base = _sample("SCHEDULE-CAR-ORDER")
    stations = [f"1{i:018d}" for i in range(500)]
    t0 = (int(time.time()) - 300) * 1000  # a backlog: seconds 2-5 minutes old
    by_partition: dict[int, list[bytes]] = {0: [], 1: []}
    stamps: dict[int, list[int]] = {0: [], 1: []}
    n = 0
    # 3 seconds per station, 2 orders in each; stations interleaved within every second, each
    # station on one partition (as a keyed producer would), so nothing is late
    for sec in range(3):
        for rep in range(2):
            for i, sid in enumerate(stations):
                p = i % 2
                by_partition[p].append(json.dumps(dict(base, stationId=sid, transactionSerialNo=f"tx{sid}",
                                                       soc=rep)).encode())
                stamps[p].append(t0 + sec * 1000 + rep * 100)
                n += 1
    for p, values in by_partition.items():
        # one produce call per run of equal timestamps (the helper stamps a whole call)
        start = 0
        while start < len(values):
            end = start
            while end < len(values) and stamps[p][end] == stamps[p][start]:
                end += 1
            produce(kafka_bootstrap, spec.topic, values[start:end], partition=p, timestamp_ms=stamps[p][start])
            start = end
    # shorter than order_close_s (2 s): the exit must wait for the seconds its last writes opened
    _ingest_until_idle(settings, until_idle_s=1.0)

    store = WindowStore(redis_client, settings.catalogue, PREFIX)
    k = Keys(PREFIX)
    still_open = [s for s in stations if redis_client.hexists(k.orders_state(s, "car_order"), "open")]
    assert still_open == []
    assert redis_client.zcard(k.orders_due("car_order")) == 0
    in_closed = 0
    for sid in stations:
        seconds = store.read_windows(sid, ["car_order"])["car_order"]
        assert [s["second"] for s in seconds] == [t0 // 1000 + j for j in range(3)], sid
        in_closed += sum(len(s["orders"]) for s in seconds)
    assert in_closed == n == 3000
