"""Helpers of the Redis Cluster tests (tests/integration/test_redis_cluster.py and the
failover scenario): a stream to ingest, the whole pipeline on a deployment, and what a
Redis holds, decoded, for comparing one Redis with a cluster key by key."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from kafkautil import CONSUMER_GROUP_TEST_SETTINGS, produce
from rq import Queue
from rq.serializers import JSONSerializer
from samplefiles import SAMPLES

from ingest.service import build
from parsers.catalogue import Catalogue
from stationflow.runtime import queue_depth, scheduler
from stationflow.settings import Settings
from store.codec import decode_item
from store.keys import keys_for
from workers import context as wctx
from workers.context import WorkerContext
from workers.rqworker import StationWorker

STATIONS = [f"10534055394{i:08d}" for i in range(40)]


def settings_for(cat: Catalogue, bootstrap: str, url: str, group: str, prefix: str,
                 queue_url: str | None = None, queue: str = "stationflow") -> Settings:
    q: dict[str, Any] = {"name": queue}
    if queue_url is not None:
        q["redis_url"] = queue_url
    return Settings.from_dict({
        "prefix": prefix,
        "redis": {"url": url},
        "queue": q,
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group, "consumer": dict(CONSUMER_GROUP_TEST_SETTINGS)},
        "topics": {t.alias: {"topic": t.topic} for t in cat.topics},
        "ingest": {"commit_interval_s": 0.2},
    })


def realtime(stations: list[str], hour: int) -> bytes:
    return json.dumps({"realTimeData": [
        {"stationId": s, "sendTime": f"2025-11-19 {hour:02d}:00:00", "hostCode": "h",
         "outputPowerPerStationAvg": 10.0 + i + hour, "outputPowerPerStationMax": 90.0,
         "gunPower": {"gunNo": ["01"], "outputPowerPerGunAvg": [1.0 + i], "outputPowerPerGunMax": [2.0]}}
        for i, s in enumerate(stations)]}).encode()


def produce_realtime(cat: Catalogue, bootstrap: str, stations: list[str], hours: Iterable[int]) -> int:
    """Realtime hours of `stations`, 20 stations a message, on both partitions; messages sent."""
    rt = cat.topic("station_realtime_data").topic
    n = 0
    for hour in hours:
        for i in range(0, len(stations), 20):
            produce(bootstrap, rt, [realtime(stations[i:i + 20], hour)], partition=(i // 20) % 2)
            n += 1
    return n


def produce_stream(cat: Catalogue, bootstrap: str, stations: list[str] = STATIONS,
                   hours: Iterable[int] = range(6, 10)) -> None:
    """Every good sample, station parameters for `stations`, their realtime `hours` on two
    partitions and one bad message."""
    base = Catalogue.build()
    for spec in cat.consumed_topics():
        produce(bootstrap, spec.topic, [(SAMPLES / f"{base.by_alias[spec.alias].topic}.json").read_bytes()],
                partition=0)
    param = json.loads((SAMPLES / "SCHEDULE-STATION-PARAM.json").read_text())[0]
    produce(bootstrap, cat.topic("station_param").topic,
            [json.dumps([{**param, "stationId": s} for s in stations]).encode()], partition=1)
    produce_realtime(cat, bootstrap, stations, hours)
    produce(bootstrap, cat.topic("station_realtime_data").topic, [b"{not json"], partition=1)


class Recorder:
    """A Kafka producer stand-in keeping what the uploader sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, Any]]] = []

    def send(self, topic: str, key: bytes, value: bytes) -> Any:
        self.sent.append((topic, key, json.loads(value)))
        return self

    def get(self, timeout: float | None = None) -> None:
        return None

    def close(self, timeout: float | None = None) -> None:
        pass


def process(settings: Settings, r: Any, qr: Any) -> list[tuple[str, bytes, dict[str, Any]]]:
    """Ingest the stream, then run every queued station job; the uploaded envelopes."""
    svc = build(settings, scheduler(settings), until_idle_s=3.0, queue_depth=queue_depth(settings),
                redis_client=r)
    assert svc.ingester.run() == 0
    rec = Recorder()
    ctx = WorkerContext.build(r, settings.catalogue, prefix=settings.prefix, producer=rec,
                              queue=settings.queue.name, queue_r=qr)
    wctx.install(ctx)
    try:
        q = Queue(settings.queue.name, connection=qr, serializer=JSONSerializer)
        StationWorker([q], connection=qr, serializer=JSONSerializer).work(burst=True)
    finally:
        wctx.install(None)
    return rec.sent


def decoded_state(r: Any, prefix: str) -> dict[str, Any]:
    """Windows, outputs, registry, dead letters and store counters, decoded; what is a clock
    reading (TTL refresh times, batch and pending bookkeeping, ingest timings) is left out."""
    k = keys_for(r, prefix)
    registry = set(k.stations_all())
    dlq_streams = {key for _, key in k.dlq_streams()}  # one stream on one Redis, buckets on the cluster
    dlq_seen = {k.dlq_bucket_keys(i)[1] for i in range(k.buckets)}
    out: dict[str, Any] = {}
    for raw in r.scan_iter(match=f"{prefix}:*", count=1000):
        key = raw.decode()
        kind = r.type(raw).decode()
        if key.endswith(("meta", "pending", ":rate")) or ":running:" in key or key.startswith(
                (f"{prefix}:batch", f"{prefix}:counters:ingest", f"{prefix}:counters:batches",
                 f"{prefix}:heartbeat", f"{prefix}:due:", f"{prefix}:sync:", f"{prefix}:deferred")):
            continue
        if key in registry:  # one key on one Redis, buckets on the cluster: compared merged
            out.setdefault("<registry>", []).extend(m.decode() for m in r.zrange(raw, 0, -1))
        elif key in dlq_streams:
            out.setdefault("<dlq>", []).extend((f[b"topic"], f[b"offset"], f[b"reason"], f[b"raw"])
                                               for _, f in r.xrange(raw))
        elif key in dlq_seen:
            out.setdefault("<dlq seen>", []).extend(m.decode() for m in r.zrange(raw, 0, -1))
        elif kind == "string":
            out[key] = decode_item(r.get(raw))
        elif kind == "list" and ":out:" in key:  # a local output's ts is the time of its run
            out[key] = [{**item, "ts": None} for item in map(decode_item, r.lrange(raw, 0, -1))]
        elif kind == "list":
            out[key] = [decode_item(x) for x in r.lrange(raw, 0, -1)]
        elif kind == "hash" and ":counters:" in key:  # buckets summed; run durations (<module>:us) are clock readings
            group = out.setdefault(f"{prefix}:counters:{k.counter_group(key)}", {})
            for f, v in r.hgetall(raw).items():
                if not f.endswith(b":us"):
                    group[f] = group.get(f, 0) + int(v)
        elif kind == "hash":
            out[key] = {f.decode(): (v if key.endswith((":ts", ":st")) else decode_item(v))
                        for f, v in r.hgetall(raw).items()}
        elif kind == "zset":
            out[key] = r.zrange(raw, 0, -1, withscores=True)
        else:
            out[key] = kind
    for merged in ("<registry>", "<dlq>", "<dlq seen>"):
        out[merged] = sorted(out.get(merged, []))
    return out


def envelopes(sent: list[tuple[str, bytes, dict[str, Any]]]) -> dict[str, Any]:
    """batch id -> envelope without its upload time, results in station order."""
    out = {}
    for topic, key, env in sent:
        assert key.decode() == env["batch_id"]
        body = {k: v for k, v in env.items() if k != "timestamp"}
        body["results"] = sorted(body["results"], key=lambda x: json.dumps(x, sort_keys=True))
        assert env["batch_id"] not in out, f"{env['batch_id']} uploaded twice"
        out[env["batch_id"]] = (topic, body)
    return out
