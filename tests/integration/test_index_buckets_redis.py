"""The dead-letter and running-index buckets on a real redis-server and on the Redis Cluster:
one Redis keeps the single keys (`<prefix>:{dlq}`, `<prefix>:running`); the cluster spreads
them over bucket keys on every master and the readers merge them, the single keys an earlier
version wrote included (the upgrade path of docs/operations.md)."""

from __future__ import annotations

import json
import time

from click.testing import CliRunner
from redis.crc import key_slot

from stationflow.cli import main
from store.connection import is_cluster
from store.dlq import DeadLetter, DeadLetters
from store.keys import Keys, keys_for
from store.pending import PendingRuns

STATIONS = [f"10534055394023874{i:02d}" for i in range(40)]
T0 = 1_763_524_800_000


def _masters(r, keys):
    """The masters (host:port) serving `keys` on the cluster."""
    owners = r.nodes_manager.slots_cache
    return {owners[key_slot(k.encode())][0].name for k in keys}


def test_running_markers_are_indexed_per_bucket_and_reclaimed_oldest_first(any_redis):
    r = any_redis
    runs = PendingRuns(r, "rb")
    k = runs.keys
    for n, s in enumerate(STATIONS):
        r.hset(k.pending(s), mapping={"m": f"m:T:0:{n}", "_job": f"job-{n}"})
        assert runs.take(s, f"job-{n}", T0 + n) == {"m": [f"m:T:0:{n}"]}
    used = [key for key in k.running_all() if r.zcard(key)]
    assert sum(r.zcard(key) for key in used) == len(STATIONS)
    if is_cluster(r):
        assert len(used) > 10 and len(_masters(r, used)) == 3 and "rb:running" not in used
    else:
        assert used == ["rb:running"]
    lost = runs.reclaim_lost(cutoff_ms=T0 + 100, limit=5)  # the five oldest of every bucket merged
    assert sorted(lost) == [(s, f"job-{n}") for n, s in enumerate(STATIONS[:5])]
    assert sum(r.zcard(key) for key in used) == len(STATIONS) - 5
    runs.queue_done(pipe := r.pipeline(transaction=False), STATIONS[5], "job-5")
    pipe.execute()
    assert set(runs.reclaim_lost(cutoff_ms=T0 + 100, limit=100)) == {(s, f"job-{n}") for n, s in
                                                                     enumerate(STATIONS) if n > 5}
    assert not any(r.zcard(key) for key in k.running_all())


def test_a_job_in_the_single_running_index_of_an_earlier_version_is_still_reclaimed(cluster_client):
    r = cluster_client
    runs = PendingRuns(r, "rb")
    s = STATIONS[0]
    r.hset(runs.running_key(s, "old-job"), mapping={"m": "m:T:0:1", "_started": T0})
    r.zadd("rb:running", {f"{s} old-job": T0})  # the index before the buckets
    assert runs.reclaim_lost(cutoff_ms=T0 + 1) == {(s, "old-job"): {"m": ["m:T:0:1"]}}
    assert not r.exists("rb:running")


def _dead(offset: int, topic: str = "T-meter", partition: int = 0) -> DeadLetter:
    return DeadLetter(topic, partition, offset, T0 + offset, "bad_json", f"cut {offset}", b"{")


def test_dead_letters_spread_over_the_buckets_and_read_back_merged(any_redis):
    r = any_redis
    dl = DeadLetters(r, "db", maxlen=1000)
    ids = dl.add([_dead(o, partition=o % 4) for o in range(60)])
    assert all(ids) and len(set(ids)) == 60
    assert dl.add([_dead(o, partition=o % 4) for o in range(60)]) == [None] * 60  # each met its seen-index
    streams = [key for _, key in dl.keys.dlq_streams() if r.exists(key)]
    if is_cluster(r):
        assert len(streams) > 10 and len(_masters(r, streams)) == 3 and "db:{dlq}" not in streams
        assert all(i.rpartition(".")[2].isdigit() for i in ids)
    else:
        assert streams == ["db:{dlq}"] and all("." not in i for i in ids)
    assert dl.count() == 60 and dl.counts() == {("T-meter", "bad_json"): 60}
    newest = list(dl.iter(page=7))
    assert sorted(e["offset"] for e in newest) == list(range(60)) and newest == dl.latest(100)
    assert all(dl.get(i)["id"] == i for i in ids)


def test_dead_letters_of_the_single_stream_stay_readable_on_the_buckets(cluster_client, redis_cluster, redis_url,
                                                                        tmp_path):
    """The upgrade path: a cluster deployment of a version before the dead-letter buckets
    wrote `<prefix>:{dlq}`; `dlq list/show`, status and the counts read it beside the
    buckets, its ids keep their form."""
    r = cluster_client
    r.stationflow_index_buckets = 1  # the earlier version: one stream (the attribute is read per store)
    old_ids = DeadLetters(r, "db").add([_dead(1), _dead(2)])
    assert r.xlen("db:{dlq}") == 2 and all("." not in i for i in old_ids)
    del r.stationflow_index_buckets
    time.sleep(0.003)  # a later millisecond: the merged order is the order written
    new = DeadLetters(r, "db")
    assert keys_for(r, "db").buckets > 1 and Keys("db").dlq == "db:{dlq}"
    (new_id,) = new.add([_dead(3)])
    assert new_id.rpartition(".")[2].isdigit()
    assert new.count() == 3 and new.counts() == {("T-meter", "bad_json"): 3}
    assert new.get(old_ids[0])["offset"] == 1

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'prefix = "db"\n[redis]\nurl = "{redis_cluster.url}"\n[queue]\nredis_url = "{redis_url}"\n')

    def cli(*args: str) -> str:
        res = CliRunner().invoke(main, ["--config", str(cfg), *args])
        assert res.exit_code == 0, res.output
        return res.output

    listed = [json.loads(x) for x in cli("dlq", "list", "--json").splitlines()]
    assert [e["id"] for e in listed] == [new_id, old_ids[1], old_ids[0]]
    assert json.loads(cli("dlq", "show", old_ids[1], "--json"))["offset"] == 2
    assert json.loads(cli("dlq", "show", new_id, "--json"))["offset"] == 3
    snap = json.loads(cli("status", "--json", "--no-lag"))
    assert snap["dlq_entries"] == 3 and snap["counters"]["dlq"] == {"T-meter:bad_json": 3}
