"""A station job dequeued by a worker that stopped before starting it is queued again by the
sweeper (workers/stuck.py), instead of holding the station's runs until RQ's 10-minute
maintenance."""

from __future__ import annotations

import time

from rq.serializers import JSONSerializer

from parsers.catalogue import Catalogue
from store.tracker import BatchTracker
from workers import jobs
from workers.context import WorkerContext
from workers.scheduling import PlannedRun, schedule, station_queue
from workers.sweeper import sweep

S = "4200000000000000001"


def test_a_job_stuck_between_dequeue_and_start_is_queued_again_and_runs(redis_client):
    ctx = WorkerContext.build(redis_client, Catalogue.build(), )
    ctx.uploader = None
    res = schedule(redis_client, ctx.catalogue, [PlannedRun(S, "load_prediction", "load_prediction:T:0:1")])
    q = station_queue(redis_client, "stationflow")
    # a worker dequeues (RQ moves the id to the intermediate list) and is stopped right there
    redis_client.lmove(q.key, q.intermediate_queue_key, "LEFT", "RIGHT")
    assert q.count == 0 and redis_client.lrange(q.intermediate_queue_key, 0, -1) == [res.enqueued[0].encode()]
    now = time.time()
    assert sweep(ctx, now_ms=int(now * 1000)).requeued == 0  # first seen: it may be starting
    assert sweep(ctx, now_ms=int((now + 6) * 1000)).requeued == 1
    assert q.job_ids == res.enqueued and redis_client.llen(q.intermediate_queue_key) == 0
    jobs.execute(ctx, S, q.dequeue_any([q], None, connection=redis_client, serializer=JSONSerializer)[0].id)
    # it ran and reported (not ready: this test loads no windows)
    assert BatchTracker(redis_client).get("load_prediction:T:0:1")[f"e:{S}"] == "failed:not_ready"


def test_a_job_that_started_is_left_to_rq(redis_client):
    ctx = WorkerContext.build(redis_client, Catalogue.build())
    ctx.uploader = None
    res = schedule(redis_client, ctx.catalogue, [PlannedRun(S, "SOH_model", "SOH_model:T:0:1")])
    q = station_queue(redis_client, "stationflow")
    redis_client.lmove(q.key, q.intermediate_queue_key, "LEFT", "RIGHT")
    redis_client.hset(f"rq:job:{res.enqueued[0]}", "status", "started")
    now = time.time()
    sweep(ctx, now_ms=int(now * 1000))
    assert sweep(ctx, now_ms=int((now + 6) * 1000)).requeued == 0 and q.count == 0
