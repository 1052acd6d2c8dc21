"""Catching up on a backlog (record timestamps minutes old), against a real broker and a real
redis-server: device records older than the TTL are stored (hidden while stale) and counted as
stale_on_arrival, and every order second is closed when `--until-idle` exits."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from kafka import KafkaProducer
from kafkautil import (
    CONSUMER_GROUP_TEST_SETTINGS,
    PRODUCER_SETTINGS,
    create_topics,
    produce,
    unique_catalogue,
)
from samplefiles import SAMPLES

from ingest.service import build
from parsers.catalogue import Catalogue
from stationflow import metrics as m
from stationflow.cli import main
from stationflow.runtime import export_ingest_metrics as export_metrics
from stationflow.runtime import queue_depth, scheduler
from stationflow.settings import Settings
from stationflow.status import gather, render
from store.keys import Keys
from store.windows import WindowStore

pytestmark = [pytest.mark.heavy(12)]


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
    export_metrics(svc.stats, svc.ingester)  # as `stationflow ingest --metrics-port` does
    assert svc.ingester.run() == 0


def _produce_stamped(bootstrap: str, topic: str, values: list[tuple[bytes, int]], partition: int) -> None:
    """Send (value, record timestamp ms) pairs in order to one partition."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_SETTINGS)
    try:
        futures = [producer.send(topic, value=v, partition=partition, timestamp_ms=ts) for v, ts in values]
        producer.flush(20)
        for f in futures:
            f.get(timeout=20)
    finally:
        producer.close(timeout=5)


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


def test_device_records_minutes_old_are_stored_hidden_and_counted(kafka_bootstrap: str, redis_client: Any,
                                                                 redis_url: str, tmp_path: Path) -> None:
    cat = unique_catalogue()
    create_topics(kafka_bootstrap, [t.topic for t in cat.topics], partitions=2)
    settings = _settings(cat, kafka_bootstrap, redis_url, "g-stale")
    topic = {a: cat.by_alias[a].topic for a in ("device_host_dcdc", "device_host_acdc", "device_storage")}
    samples = {a: _sample(cat.by_alias[a].topic.rsplit("-", 1)[0]) for a in topic}
    now = int(time.time() * 1000)
    stations = [f"2{i:018d}" for i in range(60)]
    sent: dict[str, list[tuple[bytes, int]]] = {a: [] for a in topic}
    newest: dict[tuple[str, str, str], int] = {}  # (station, alias, device) -> newest record ts
    for n, sid in enumerate(stations):
        base = now - 300_000 + n * 3_000  # each station's records are 5 to 2 minutes old
        for rep in range(3):  # every device reports 3 times, 15 s apart
            for a, key_field, keys in (("device_host_dcdc", "hostCode", ("H1", "H2")),
                                       ("device_host_acdc", "hostCode", ("H1", "H2")),
                                       ("device_storage", "storageCode", ("B1",))):
                for j, dev in enumerate(keys):
                    ts = base + rep * 15_000 + j
                    sent[a].append((json.dumps(dict(samples[a], stationId=sid, **{key_field: dev})).encode(), ts))
                    newest[(sid, a, dev)] = ts
    # real supersessions: an older DCDC record of H1 arrives after the newer ones (5 stations)
    late = [(json.dumps(dict(samples["device_host_dcdc"], stationId=sid, hostCode="H1", dcdcPower=[0.0],
                             dcWorkStatus=["00"])).encode(), newest[(sid, "device_host_dcdc", "H1")] - 20_000)
            for sid in stations[:5]]
    for a, values in sent.items():
        _produce_stamped(kafka_bootstrap, topic[a], values, partition=0)
    _produce_stamped(kafka_bootstrap, topic["device_host_dcdc"], late, partition=0)
    _ingest_until_idle(settings, until_idle_s=2.0)

    r = redis_client
    store = WindowStore(r, settings.catalogue, PREFIX)
    for sid in stations:
        w = store.read_windows(sid, list(topic))
        for a in topic:
            assert {d: item["ts"] for d, item in w[a].items()} == \
                {d: ts for (s, al, d), ts in newest.items() if s == sid and al == a}, (sid, a)
    assert store.present(stations, list(topic)) == {s: set() for s in stations}  # hidden while stale

    k = Keys(PREFIX)
    counts = {a: {f.decode(): int(v) for f, v in r.hgetall(k.topic_counters(t)).items()} for a, t in topic.items()}
    for a, values in sent.items():
        extra = len(late) if a == "device_host_dcdc" else 0
        assert counts[a]["stale_on_arrival"] == len(values) + extra, a
        assert counts[a].get("records_superseded", 0) == extra, a
        assert counts[a]["records_applied"] == len(values), a
        assert m.STALE_ON_ARRIVAL.value(topic=topic[a]) == len(values) + extra
    total = sum(len(v) for v in sent.values()) + len(late)
    assert int(r.hget(k.counters("ingest"), "stale_on_arrival")) == total
    assert f"stale_on_arrival {total}" in render(gather(r, PREFIX, workers=False))

    cfg = tmp_path / "stationflow.toml"
    cfg.write_text(f'prefix = "{PREFIX}"\n[redis]\nurl = "{redis_url}"\n')
    out = CliRunner().invoke(main, ["--config", str(cfg), "inspect", stations[0], "device_host_dcdc", "--json"],
                             catch_exceptions=False)
    devices = json.loads(out.output)["topics"]["device_host_dcdc"]["devices"]
    assert sorted(devices) == ["H1", "H2"]
    assert all(d["visible"] is False and d["age_s"] >= 60 for d in devices.values())
