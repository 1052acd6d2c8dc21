"""Rate control (`min_interval_s`) on a real redis-server and on the Redis Cluster (RQ queue
on the plain Redis): the deferred index is one key `sf:deferred` on one Redis and split into
the index buckets on the cluster; schedule, the sweepers' release and the `--burst` wait read
every bucket."""

from __future__ import annotations

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from parsers.batches import PlannedRun
from parsers.catalogue import Catalogue
from store.connection import is_cluster
from store.counters import read_groups
from store.keys import CLUSTER_BUCKETS
from store.pending import PendingRuns
from workers.scheduling import ScheduleOptions, release_deferred, schedule

NOW = 1_763_524_800_000
MOD = "evaluation_model"
CAT = Catalogue.build(module_overrides={MOD: {"min_interval_s": 10}})
STATIONS = [f"10534055394023874{i:02d}" for i in range(30)]


@pytest.fixture(params=["single", "cluster"])
def stores(request, redis_client):
    """(state client, queue client): one Redis, or the cluster with the queue on the plain Redis."""
    if request.param == "cluster":
        return request.getfixturevalue("cluster_client"), redis_client
    return redis_client, redis_client


def _run(batch: int, station: str) -> PlannedRun:
    return PlannedRun(station, MOD, f"{MOD}:T:0:{batch}")


def test_deferred_runs_are_indexed_per_bucket_and_all_released(stores):
    r, qr = stores
    opts = ScheduleOptions(queue_r=None if qr is r else qr)
    p = PendingRuns(r)
    for i, s in enumerate(STATIONS):  # each station ran at NOW + i: it may run again at NOW + 10 s + i
        first = schedule(r, CAT, [_run(1, s)], opts, now_ms=NOW + i)
        assert p.take(s, first.enqueued[0], NOW + i + 1) == {MOD: [f"{MOD}:T:0:1"]}
    deferred = schedule(r, CAT, [_run(2, s) for s in STATIONS], opts, now_ms=NOW + 1000)
    assert deferred.deferred == {MOD: len(STATIONS)} and not deferred.enqueued

    if is_cluster(r):
        assert p.keys.buckets == CLUSTER_BUCKETS
        used = {p.keys.deferred_of(s) for s in STATIONS}
        assert len(used) > 10 and sum(r.zcard(k) for k in used) == len(STATIONS)
        assert not r.exists("sf:deferred")
    else:
        assert p.keys.deferred_all() == ["sf:deferred"] and r.zcard("sf:deferred") == len(STATIONS)
    assert p.next_deferred() == NOW + 10_000
    assert p.deferred_due(NOW + 10_002) == STATIONS[:3]  # earliest first across the buckets

    queue = Queue("stationflow", connection=qr, serializer=JSONSerializer)
    queue.empty()
    _queued_stations = lambda q: sum(len(j.args[0]) for j in q.jobs)  # noqa: E731 - stations per group job
    rel = release_deferred(r, CAT, opts, now_ms=NOW + 10_009, limit=7)  # 10 due, 7 at a time
    assert rel.released == {MOD: 7} and _queued_stations(queue) == 7
    rel = release_deferred(r, CAT, opts, now_ms=NOW + 10_009)
    assert rel.released == {MOD: 3} and _queued_stations(queue) == 10
    assert p.next_deferred() == NOW + 10_010
    rel = release_deferred(r, CAT, opts, now_ms=NOW + 20_000)
    assert rel.released == {MOD: 20} and _queued_stations(queue) == 30 and rel.next_due_ms is None
    assert p.next_deferred() is None and not any(r.exists(k) for k in p.keys.deferred_all())
    assert all(p.pending(s)[MOD] == f"{MOD}:T:0:2" for s in STATIONS)
    assert read_groups(r, p.keys, ["triggers"])["triggers"][f"{MOD}:released"] == 30
