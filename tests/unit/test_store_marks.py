"""Replay marks: triggers at or below how far their (station or global alias, topic,
partition) was scheduled are dropped; the marks move in the station's marking script, only
forward and only beside the windows; a replayed message whose runs the station still holds
hands them back (resumed). The crash windows against a real Redis (and Redis Cluster) are in
tests/integration/test_schedule_marks.py."""

from __future__ import annotations

from parsers.batches import PlannedRun
from parsers.records import Source
from store.keys import Keys
from store.marks import ScheduleMarks, advance_marks
from store.pending import FLAG_PENDING, FLAG_REPLAY, FLAG_SCHEDULED, PendingRuns
from store.scripts import ScriptPipeline
from store.windows import Trigger

K = Keys("sf")


def _t(station, offset, topic="RT", partition=0, alias="station_realtime_data"):
    return Trigger(station, alias, Source(topic, partition, offset, 0))


def _meta(r, *stations):
    for s in stations:
        r.hset(K.meta(s), "hwm:RT:0", 1)  # the window write created the meta hash
    r.hset(K.global_meta("environment_calendar"), "hwm:CAL:0", 1)


def _record(r, plan):
    """What the scheduler's marking step does with the marks of a plan (no runs)."""
    PendingRuns(r).mark({}, {}, 0, {s: plan.station_advance(s, ()) for s in plan.stations})
    advance_marks(r, plan.aliases)


def test_scheduled_triggers_are_dropped_on_replay(fake_redis):
    _meta(fake_redis, "S1", "S2")
    marks = ScheduleMarks(fake_redis)
    first = [_t("S1", 5), _t("S1", 7), _t("S2", 6), _t("S1", 3, partition=1)]
    f = marks.filter(first)
    assert f.fresh == first and f.replayed == 0 and f.resumed == []
    assert f.marks.stations == {"S1": {"sm:RT:0": 7, "sm:RT:1": 3}, "S2": {"sm:RT:0": 6}}
    _record(fake_redis, f.marks)
    again = [_t("S1", 7), _t("S1", 8), _t("S2", 6), _t("S1", 4, partition=1), _t("S3", 1)]
    f = marks.filter(again)
    assert f.fresh == [_t("S1", 8), _t("S1", 4, partition=1), _t("S3", 1)] and f.replayed == 2
    assert marks.read("S1") == {"RT:0": 7, "RT:1": 3}


def test_marks_never_move_back_and_need_the_meta_hash(fake_redis):
    _meta(fake_redis, "S1")
    pending = PendingRuns(fake_redis)
    pending.mark({}, {}, 0, {"S1": {"sm:RT:0": 9}})
    pending.mark({}, {}, 0, {"S1": {"sm:RT:0": 4}})  # a late step of an older poll
    assert ScheduleMarks(fake_redis).read("S1") == {"RT:0": 9}
    pending.mark({}, {}, 0, {"gone": {"sm:RT:0": 4}})  # windows expired: no mark without them
    assert not fake_redis.exists(K.meta("gone"))


def test_global_triggers_are_marked_on_the_global_alias(fake_redis):
    _meta(fake_redis)
    marks = ScheduleMarks(fake_redis)
    cal = _t(None, 2, topic="CAL", alias="environment_calendar")
    f = marks.filter([cal])
    assert f.marks.aliases == {K.global_meta("environment_calendar"): {"sm:CAL:0": 2}}
    _record(fake_redis, f.marks)
    assert marks.read(None, "environment_calendar") == {"CAL:0": 2}
    f = marks.filter([cal])
    assert (f.fresh, f.resumed, f.replayed, bool(f.marks)) == ([], [], 1, False)


def test_an_ingester_restricted_to_some_modules_keeps_its_own_marks(fake_redis):
    _meta(fake_redis, "S1")
    every = ScheduleMarks(fake_redis)
    some = ScheduleMarks(fake_redis, modules=["SOH_model", "load_prediction"])
    _record(fake_redis, every.filter([_t("S1", 5)]).marks)
    assert some.filter([_t("S1", 5)]).replayed == 0  # not scheduled by *this* ingester yet
    _record(fake_redis, some.filter([_t("S1", 5)]).marks)
    assert some.filter([_t("S1", 5)]).replayed == 1
    assert every.read("S1") == {"RT:0": 5} and some.read("S1") == {"RT:0": 5}


def test_the_marking_script_gates_runs_by_their_message_and_records_it(fake_redis):
    _meta(fake_redis, "S1")
    pending, marks = PendingRuns(fake_redis), ScheduleMarks(fake_redis)
    f = marks.filter([_t("S1", 5)])
    plan = f.marks
    run = ("load_prediction", "load_prediction:RT:0:5", 10_000, 0, *plan.run_mark("load_prediction:RT:0:5"))
    [mk] = pending.mark({"S1": [run]}, {"S1": "job-1"}, 0, {"S1": plan.station_advance("S1", [run[1]])})
    assert mk.flags == (FLAG_PENDING,) and marks.read("S1") == {"RT:0": 5}
    # redelivered before its batch was created: the reserved run is handed back and is a replay
    f = marks.filter([_t("S1", 5)])
    assert f.fresh == [] and f.resumed == [PlannedRun("S1", "load_prediction", "load_prediction:RT:0:5")]
    [mk] = pending.mark({"S1": [run]}, {"S1": "job-2"}, 0)
    assert mk.flags == (FLAG_REPLAY,) and mk.job_id == "job-1"
    # once its batch exists (commit) and a job took it, the same message schedules nothing
    sp = ScriptPipeline(fake_redis)
    pending.queue_commit(sp, "S1", [run[:2]])
    sp.execute()
    assert pending.take("S1", "job-1", 1) == {"load_prediction": ["load_prediction:RT:0:5"]}
    assert marks.filter([_t("S1", 5)]).resumed == []
    [mk] = pending.mark({"S1": [run]}, {"S1": "job-3"}, 0)
    assert mk.flags == (FLAG_SCHEDULED,) and mk.job_id == ""
