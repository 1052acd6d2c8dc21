"""Scheduling: coalescing, batch creation, one job per station, idempotent replays."""

from __future__ import annotations

import json

import pytest
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from parsers.batches import PlannedRun
from parsers.catalogue import default_catalogue
from store.pending import PendingRuns
from store.tracker import BatchTracker
from workers.scheduling import ScheduleOptions, job_id_for, job_timeout_s, schedule

CAT = default_catalogue()
NOW = 1_763_524_800_000


def _queue(r) -> Queue:
    return Queue("stationflow", connection=r, serializer=JSONSerializer)


def test_job_id_is_deterministic_and_safe():
    a = job_id_for("1053405539402387456", ["load_prediction:T:0:5", "SOH_model:T:0:5"])
    b = job_id_for("1053405539402387456", ["SOH_model:T:0:5", "load_prediction:T:0:5"])
    assert a == b and a.startswith("st-1053405539402387456-")
    odd = job_id_for("st.1/ä:x", ["m:T:0:1"])
    assert all(c.isascii() and (c.isalnum() or c in "_-") for c in odd)
    assert odd != job_id_for("st.1/ä:y", ["m:T:0:1"])


def test_one_group_job_for_the_stations_and_batches_with_expected(fake_redis):
    runs = [PlannedRun(s, m, f"{m}:RT:0:7") for s in ("S1", "S2", "S3")
            for m in ("load_prediction", "SOH_model")]
    res = schedule(fake_redis, CAT, runs, now_ms=NOW)
    assert len(res.enqueued) == 1 and res.runs == 6 and res.batches_created == 2
    assert sum(res.absorbed.values()) == 0
    tr = BatchTracker(fake_redis)
    b = tr.get("load_prediction:RT:0:7")
    assert json.loads(b["expected"]) == ["S1", "S2", "S3"]
    assert b["state"] == "open" and int(b["deadline"]) == NOW + 5000
    q = _queue(fake_redis)
    assert q.count == 1
    job = Job.fetch(res.enqueued[0], connection=fake_redis, serializer=JSONSerializer)
    assert job.func_name == "workers.jobs.run_stations" and list(job.args) == [["S1", "S2", "S3"]]
    assert job.meta["batches"]["S2"] == ["load_prediction:RT:0:7", "SOH_model:RT:0:7"]
    for s in ("S1", "S2", "S3"):
        pend = PendingRuns(fake_redis).pending(s)
        assert pend == {"_job": res.enqueued[0], "load_prediction": "load_prediction:RT:0:7",
                        "SOH_model": "SOH_model:RT:0:7", "_d:load_prediction": str(NOW + 5000),
                        "_d:SOH_model": str(NOW + 5000)}


def test_stations_are_grouped_group_size_a_job(fake_redis):
    stations = [f"S{i}" for i in range(5)]
    runs = [PlannedRun(s, "load_prediction", "load_prediction:RT:0:7") for s in stations]
    res = schedule(fake_redis, CAT, runs, ScheduleOptions(group_size=2), now_ms=NOW)
    jobs = [Job.fetch(j, connection=fake_redis, serializer=JSONSerializer) for j in res.enqueued]
    assert [list(j.args) for j in jobs] == [[["S0", "S1"]], [["S2", "S3"]], [["S4"]]]
    assert jobs[0].timeout == 2 * job_timeout_s(CAT)  # each module's calls may wait for the earlier ones
    one = schedule(fake_redis, CAT, [PlannedRun("T1", "SOH_model", "SOH_model:RT:0:8"),
                                     PlannedRun("T2", "SOH_model", "SOH_model:RT:0:8")],
                   ScheduleOptions(group_size=1), now_ms=NOW)
    assert len(one.enqueued) == 2


def test_later_trigger_joins_pending_job_and_same_module_is_absorbed(fake_redis):
    first = schedule(fake_redis, CAT, [PlannedRun("S1", "load_prediction", "load_prediction:RT:0:1")], now_ms=NOW)
    second = schedule(fake_redis, CAT, [PlannedRun("S1", "load_prediction", "load_prediction:RT:0:2"),
                                        PlannedRun("S1", "pv_prediction", "pv_prediction:PV:0:3"),
                                        PlannedRun("S2", "load_prediction", "load_prediction:RT:0:2")],
                      now_ms=NOW + 10)
    assert len(first.enqueued) == 1
    assert second.absorbed == {"load_prediction": 1}
    assert second.joined == 1 and len(second.enqueued) == 1  # only S2 needs a job
    tr = BatchTracker(fake_redis)
    assert json.loads(tr.get("load_prediction:RT:0:2")["expected"]) == ["S2"]
    assert json.loads(tr.get("pv_prediction:PV:0:3")["expected"]) == ["S1"]
    assert _queue(fake_redis).count == 2


def test_fully_absorbed_batch_is_not_created(fake_redis):
    schedule(fake_redis, CAT, [PlannedRun("S1", "load_prediction", "load_prediction:RT:0:1")], now_ms=NOW)
    res = schedule(fake_redis, CAT, [PlannedRun("S1", "load_prediction", "load_prediction:RT:1:9")], now_ms=NOW)
    assert res.batches_created == 0 and res.absorbed == {"load_prediction": 1}
    assert BatchTracker(fake_redis).get("load_prediction:RT:1:9") == {}


def test_replay_creates_nothing_new(fake_redis):
    runs = [PlannedRun(s, "load_prediction", "load_prediction:RT:0:7") for s in ("S1", "S2")]
    a = schedule(fake_redis, CAT, runs, now_ms=NOW)
    b = schedule(fake_redis, CAT, runs, now_ms=NOW + 1000)
    assert len(a.enqueued) == 1 and b.enqueued == []
    assert b.replayed == 2 and b.batches_created == 0 and b.batches_existing == 1
    assert int(BatchTracker(fake_redis).get("load_prediction:RT:0:7")["deadline"]) == NOW + 5000
    assert _queue(fake_redis).count == 1


def test_vanished_job_is_enqueued_again(fake_redis):
    runs = [PlannedRun("S1", "load_prediction", "load_prediction:RT:0:7")]
    a = schedule(fake_redis, CAT, runs, now_ms=NOW)
    fake_redis.delete(Job.key_for(a.enqueued[0]))  # e.g. dropped by its TTL
    b = schedule(fake_redis, CAT, [PlannedRun("S1", "SOH_model", "SOH_model:RT:0:8")], now_ms=NOW)
    assert b.enqueued == a.enqueued


def test_unknown_module_fails_before_writing(fake_redis):
    with pytest.raises(ValueError, match="unknown module"):
        schedule(fake_redis, CAT, [PlannedRun("S1", "nope", "nope:T:0:1")], now_ms=NOW)
    assert fake_redis.keys("*") == []


def test_queued_job_has_no_ttl_by_default(fake_redis):
    res = schedule(fake_redis, CAT, [PlannedRun("S1", "load_prediction", "load_prediction:RT:0:7")], now_ms=NOW)
    job = Job.fetch(res.enqueued[0], connection=fake_redis, serializer=JSONSerializer)
    assert job.ttl is None  # a job waiting for workers is never dropped by RQ
    res = schedule(fake_redis, CAT, [PlannedRun("S2", "load_prediction", "load_prediction:RT:0:7")],
                   ScheduleOptions(job_ttl_s=120), now_ms=NOW)
    assert Job.fetch(res.enqueued[0], connection=fake_redis, serializer=JSONSerializer).ttl == 120


def test_pending_run_whose_batch_closed_moves_to_the_new_batch(fake_redis):
    """Workers down past the batch deadline: the next trigger is not absorbed into the closed
    batch; the still-pending run now belongs to the new message's batch, in the same job."""
    first = schedule(fake_redis, CAT, [PlannedRun("S1", "load_prediction", "load_prediction:RT:0:1")], now_ms=NOW)
    inside = schedule(fake_redis, CAT, [PlannedRun("S1", "load_prediction", "load_prediction:RT:0:2")],
                      now_ms=NOW + 4999)
    assert inside.absorbed == {"load_prediction": 1} and inside.batches_created == 0
    after = schedule(fake_redis, CAT, [PlannedRun("S1", "load_prediction", "load_prediction:RT:0:3")],
                     now_ms=NOW + 5000)
    assert sum(after.absorbed.values()) == 0 and after.runs == 1 and after.batches_created == 1
    assert after.enqueued == [] and after.joined == 1  # the waiting job takes it
    b = BatchTracker(fake_redis).get("load_prediction:RT:0:3")
    assert json.loads(b["expected"]) == ["S1"] and int(b["deadline"]) == NOW + 10_000
    pend = PendingRuns(fake_redis).pending("S1")
    assert pend["load_prediction"] == "load_prediction:RT:0:3" and pend["_job"] == first.enqueued[0]
    # a replay of the new message is still recognised as the same run
    again = schedule(fake_redis, CAT, [PlannedRun("S1", "load_prediction", "load_prediction:RT:0:3")],
                     now_ms=NOW + 20_000)
    assert again.replayed == 1 and again.batches_created == 0
    assert _queue(fake_redis).count == 1


def test_a_run_is_not_taken_before_its_batch_exists(fake_redis):
    """Marking reserves a run; only the commit (after the batch creation) makes it takeable,
    so a job that starts between the two never reports to a batch that is not there yet."""
    pend = PendingRuns(fake_redis)
    pend.mark({"S1": [("load_prediction", "load_prediction:RT:0:1", NOW + 5000)]}, {"S1": "job-x"}, NOW)
    assert pend.take("S1", "job-early", NOW) == {}  # reserved: left for the next job
    assert pend.pending("S1")["load_prediction"] == "?load_prediction:RT:0:1"
    # a replay of the same message (the scheduler crashed before creating the batch) is the same run
    again = pend.mark({"S1": [("load_prediction", "load_prediction:RT:0:1", NOW + 5000)]}, {"S1": "job-y"}, NOW)
    assert again[0].flags == (2,)
    from store.scripts import ScriptPipeline

    sp = ScriptPipeline(fake_redis)
    pend.queue_commit(sp, "S1", [("load_prediction", "load_prediction:RT:0:1")])
    sp.execute()
    assert pend.take("S1", "job-late", NOW) == {"load_prediction": ["load_prediction:RT:0:1"]}


def test_runs_joining_a_job_that_already_started_get_a_job_of_their_own(fake_redis):
    first = schedule(fake_redis, CAT, [PlannedRun("S1", "load_prediction", "load_prediction:RT:0:1")], now_ms=NOW)
    fake_redis.hset(Job.key_for(first.enqueued[0]), "status", "started")  # took its runs (or is about to)
    second = schedule(fake_redis, CAT, [PlannedRun("S1", "SOH_model", "SOH_model:RT:0:2")], now_ms=NOW + 10)
    assert second.joined == 0 and len(second.enqueued) == 1 and second.enqueued != first.enqueued
    assert PendingRuns(fake_redis).pending("S1")["_job"] == second.enqueued[0]
