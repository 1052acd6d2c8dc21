"""Redis Cluster as a deployment: configuration against a real local cluster (3 masters +
3 replicas), and the same message stream ingested and processed once on a single Redis and
once on the cluster (queues on a plain Redis) giving the same windows, outputs, dead letters,
counters and uploaded envelopes, compared key by key, decoded."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from clusterutil import STATIONS, decoded_state, envelopes, process, produce_stream, settings_for
from kafkautil import create_topics, unique_catalogue

from stationflow.cli import main
from store.connection import is_cluster

pytestmark = [pytest.mark.heavy(31)]


def test_single_redis_and_cluster_store_and_upload_the_same(kafka_bootstrap, redis_client, redis_url,
                                                            cluster_client, redis_cluster):
    cat = unique_catalogue()
    create_topics(kafka_bootstrap, [t.topic for t in cat.topics], partitions=2)
    produce_stream(cat, kafka_bootstrap)
    single = settings_for(cat, kafka_bootstrap, redis_url, "eq-single", "eq")
    sent_single = process(single, redis_client, redis_client)
    clustered = settings_for(cat, kafka_bootstrap, redis_cluster.url, "eq-cluster", "eq", queue_url=redis_url,
                          queue="eqc")
    r = clustered.redis.connect()
    assert is_cluster(r)
    sent_cluster = process(clustered, r, redis_client)

    a, b = decoded_state(redis_client, "eq"), decoded_state(cluster_client, "eq")
    assert a.keys() == b.keys()
    assert len(a) >= 4 * len(STATIONS) and len(a["<registry>"]) >= len(STATIONS)  # param, realtime, outputs per station, besides the samples
    for key in a:
        assert a[key] == b[key], key
    outputs = [key for key in a if ":out:" in key]
    assert len(outputs) >= len(STATIONS)  # every station's modules stored outputs
    assert len(a["<dlq>"]) == 1
    ea, eb = envelopes(sent_single), envelopes(sent_cluster)
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

    res = CliRunner().invoke(main, ["config", "check", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    topo = json.loads(res.output)
    masters = topo["redis_cluster"]["masters"]
    assert sorted(m["node"] for m in masters) == sorted(f"{n.host}:{n.port}" for n in redis_cluster.masters())
    assert sum(m["slots"] for m in masters) == topo["redis_cluster"]["slots_covered"] == 16384
    assert topo["redis_cluster"]["slots_total"] == 16384 and all(m["slots"] > 5000 for m in masters)
    assert topo["queue_redis"] == {"url": redis_url, "reachable": True}
    assert topo["settings"]["redis"]["url"] == redis_cluster.url

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


def test_status_inspect_and_dlq_work_against_the_cluster(kafka_bootstrap, redis_client, redis_url, cluster_client,
                                                         redis_cluster, tmp_path):
    """The operator commands read a cluster deployment unchanged: status merges the index
    buckets and reads the queue Redis, inspect reads one station's slot, dlq lists the {dlq}
    stream, and inspect --keys prints redis-cli -c examples."""
    cat = unique_catalogue()
    create_topics(kafka_bootstrap, [t.topic for t in cat.topics], partitions=2)
    produce_stream(cat, kafka_bootstrap)
    settings = settings_for(cat, kafka_bootstrap, redis_cluster.url, "ops-cluster", "ops", queue_url=redis_url,
                            queue="opsq")
    process(settings, settings.redis.connect(), redis_client)
    cfg = tmp_path / "c.toml"
    cfg.write_text(settings.to_toml(masked=False))

    def cli(*args: str) -> str:
        res = CliRunner().invoke(main, ["--config", str(cfg), *args])
        assert res.exit_code == 0, res.output
        return res.output

    snap = json.loads(cli("status", "--json", "--no-lag"))
    assert snap["stations"] >= len(STATIONS)
    assert snap["dlq_entries"] == 1 and snap["batches_open"] == 0
    assert snap["queues"]["opsq"]["queued"] == 0
    assert snap["counters"]["ingest"]["messages"] >= 1

    view = json.loads(cli("inspect", STATIONS[0], "--json"))
    assert view["station"] == STATIONS[0] and view["last_seen_age_s"] is not None  # the registry bucket
    assert "station_param" in view["topics"] and view["offsets"] and view["outputs"]

    listed = [json.loads(x) for x in cli("dlq", "list", "--json").splitlines() if x.strip()]
    assert [e["reason"] for e in listed] == ["bad_json"]

    keys = cli("inspect", "--keys")
    host, port = redis_cluster.url[len("redis+cluster://"):].split(",")[0].split(":")
    station = json.loads(cli("inspect", "--keys", "--json"))["station"]  # the newest of every registry bucket
    assert station in STATIONS or station.isdigit()
    assert f"redis-cli -c -u 'redis://{host}:{port}' HGETALL 'ops:{{{station}}}:meta'" in keys
    assert "ops:stations:{<bucket>}" in keys
