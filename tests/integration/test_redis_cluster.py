"""Redis Cluster as a deployment: configuration against a real local cluster (3 masters +
3 replicas), and the same message stream ingested and processed once on a single Redis and
once on the cluster (queues on a plain Redis) giving the same windows, outputs, dead letters,
counters and uploaded envelopes, compared key by key, decoded."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from kafkautil import CONSUMER_GROUP_TEST_SETTINGS, create_topics, produce, unique_catalogue
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer
from samplefiles import SAMPLES

from ingest.service import build
from parsers.catalogue import Catalogue
from stationflow.cli import main
from stationflow.commands.ingest_cmd import queue_depth, scheduler
from stationflow.settings import Settings
from store.codec import decode_item
from store.connection import is_cluster
from store.keys import Keys, keys_for
from workers import context as wctx
from workers.context import WorkerContext

STATIONS = [f"10534055394{i:08d}" for i in range(40)]


def _settings(cat: Catalogue, bootstrap: str, url: str, group: str, prefix: str,
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


def _realtime(stations: list[str], hour: int) -> bytes:
    return json.dumps({"realTimeData": [
        {"stationId": s, "sendTime": f"2025-11-19 {hour:02d}:00:00", "hostCode": "h",
         "outputPowerPerStationAvg": 10.0 + i + hour, "outputPowerPerStationMax": 90.0,
         "gunPower": {"gunNo": ["01"], "outputPowerPerGunAvg": [1.0 + i], "outputPowerPerGunMax": [2.0]}}
        for i, s in enumerate(stations)]}).encode()


def _stream(cat: Catalogue, bootstrap: str) -> None:
    """Every good sample, station parameters for STATIONS, realtime hours on two partitions and
    one bad message."""
    base = Catalogue.build()
    for spec in cat.consumed_topics():
        produce(bootstrap, spec.topic, [(SAMPLES / f"{base.by_alias[spec.alias].topic}.json").read_bytes()],
                partition=0)
    param = json.loads((SAMPLES / "SCHEDULE-STATION-PARAM.json").read_text())[0]
    produce(bootstrap, cat.topic("station_param").topic,
            [json.dumps([{**param, "stationId": s} for s in STATIONS]).encode()], partition=1)
    rt = cat.topic("station_realtime_data").topic
    for hour in range(6, 10):
        produce(bootstrap, rt, [_realtime(STATIONS[:20], hour)], partition=0)
        produce(bootstrap, rt, [_realtime(STATIONS[20:], hour)], partition=1)
    produce(bootstrap, rt, [b"{not json"], partition=1)


class _Recorder:
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


def _process(settings: Settings, r: Any, qr: Any) -> list[tuple[str, bytes, dict[str, Any]]]:
    """Ingest the stream, then run every queued station job; the uploaded envelopes."""
    svc = build(settings, scheduler(settings), until_idle_s=3.0, queue_depth=queue_depth(settings),
                redis_client=r)
    assert svc.ingester.run() == 0
    rec = _Recorder()
    ctx = WorkerContext.build(r, settings.catalogue, prefix=settings.prefix, producer=rec,
                              queue=settings.queue.name, queue_r=qr)
    wctx.install(ctx)
    try:
        q = Queue(settings.queue.name, connection=qr, serializer=JSONSerializer)
        SimpleWorker([q], connection=qr, serializer=JSONSerializer).work(burst=True)
    finally:
        wctx.install(None)
    return rec.sent


def _decoded_state(r: Any, prefix: str) -> dict[str, Any]:
    """Windows, outputs, registry, dead letters and store counters, decoded; what is a clock
    reading (TTL refresh times, batch and pending bookkeeping, ingest timings) is left out."""
    k = keys_for(r, prefix)
    registry = set(k.stations_all())
    out: dict[str, Any] = {}
    for raw in r.scan_iter(match=f"{prefix}:*", count=1000):
        key = raw.decode()
        kind = r.type(raw).decode()
        if key.endswith(("meta", "pending")) or ":running:" in key or key.startswith(
                (f"{prefix}:batch", f"{prefix}:counters:ingest", f"{prefix}:counters:batches",
                 f"{prefix}:heartbeat", f"{prefix}:due:")):
            continue
        if key in registry:  # one key on one Redis, buckets on the cluster: compared merged
            out.setdefault("<registry>", []).extend(m.decode() for m in r.zrange(raw, 0, -1))
        elif key == k.dlq:
            out[key] = sorted((f[b"topic"], f[b"offset"], f[b"reason"], f[b"raw"]) for _, f in r.xrange(raw))
        elif key == k.dlq_seen:
            out[key] = sorted(m.decode() for m in r.zrange(raw, 0, -1))
        elif kind == "string":
            out[key] = decode_item(r.get(raw))
        elif kind == "list" and ":out:" in key:  # a local output's ts is the time of its run
            out[key] = [{**item, "ts": None} for item in map(decode_item, r.lrange(raw, 0, -1))]
        elif kind == "list":
            out[key] = [decode_item(x) for x in r.lrange(raw, 0, -1)]
        elif kind == "hash" and ":counters:" in key:  # run durations (<module>:us) are clock readings
            out[key] = {f: v for f, v in r.hgetall(raw).items() if not f.endswith(b":us")}
        elif kind == "hash":
            out[key] = {f.decode(): (v if key.endswith((":ts", ":st")) else decode_item(v))
                        for f, v in r.hgetall(raw).items()}
        elif kind == "zset":
            out[key] = r.zrange(raw, 0, -1, withscores=True)
        else:
            out[key] = kind
    out["<registry>"] = sorted(out.get("<registry>", []))
    return out


def _envelopes(sent: list[tuple[str, bytes, dict[str, Any]]]) -> dict[str, Any]:
    """batch id -> envelope without its upload time, results in station order."""
    out = {}
    for topic, key, env in sent:
        assert key.decode() == env["batch_id"]
        body = {k: v for k, v in env.items() if k != "timestamp"}
        body["results"] = sorted(body["results"], key=lambda x: json.dumps(x, sort_keys=True))
        assert env["batch_id"] not in out, f"{env['batch_id']} uploaded twice"
        out[env["batch_id"]] = (topic, body)
    return out


def test_single_redis_and_cluster_store_and_upload_the_same(kafka_bootstrap, redis_client, redis_url,
                                                            cluster_client, redis_cluster):
    cat = unique_catalogue()
    create_topics(kafka_bootstrap, [t.topic for t in cat.topics], partitions=2)
    _stream(cat, kafka_bootstrap)
    single = _settings(cat, kafka_bootstrap, redis_url, "eq-single", "eq")
    sent_single = _process(single, redis_client, redis_client)
    clustered = _settings(cat, kafka_bootstrap, redis_cluster.url, "eq-cluster", "eq", queue_url=redis_url,
                          queue="eqc")
    r = clustered.redis.connect()
    assert is_cluster(r)
    sent_cluster = _process(clustered, r, redis_client)

    a, b = _decoded_state(redis_client, "eq"), _decoded_state(cluster_client, "eq")
    assert a.keys() == b.keys()
    assert len(a) >= 4 * len(STATIONS) and len(a["<registry>"]) >= len(STATIONS)  # param, realtime, outputs per station, besides the samples
    for key in a:
        assert a[key] == b[key], key
    outputs = [key for key in a if ":out:" in key]
    assert len(outputs) >= len(STATIONS)  # every station's modules stored outputs
    assert len(a[Keys("eq").dlq]) == 1
    ea, eb = _envelopes(sent_single), _envelopes(sent_cluster)
    assert ea and ea == eb
    # the cluster's keys are spread over its three masters (one station = one slot)
    per_node = [n.client().dbsize() for n in redis_cluster.masters()]
    assert all(n > 0 for n in per_node), per_node


def test_config_check_lists_masters_and_slot_coverage(tmp_path, redis_cluster, redis_url):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[redis]\nurl = "{redis_cluster.url}"\n[queue]\nredis_url = "{redis_url}"\n')
    res = CliRunner().invoke(main, ["config", "check", str(cfg)])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("# redis cluster:"))
    assert "3 masters" in line and "slots covered 16384/16384" in line
    assert "# queue redis: " in res.output

    cfg.write_text(f'[redis]\nurl = "{redis_cluster.url}"\n')
    res = CliRunner().invoke(main, ["config", "check", str(cfg)])
    assert res.exit_code == 2
    assert "queue.redis_url: required" in res.output


def test_config_check_fails_on_an_unreachable_cluster(tmp_path, redis_url):
    from stationflow.local import free_port

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[redis]\nurl = "redis+cluster://127.0.0.1:{free_port()}/"\nconnect_timeout = 0.5\n'
                   f'[queue]\nredis_url = "{redis_url}"\n')
    res = CliRunner().invoke(main, ["config", "check", str(cfg)])
    assert res.exit_code == 2
    assert res.output.startswith("config error:") and len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize("url", ["redis+cluster://127.0.0.1:7000/3"])
def test_cluster_url_with_a_database_is_refused(url):
    from store.connection import connect

    with pytest.raises(ValueError, match="only database 0"):
        connect(url, check=False)
