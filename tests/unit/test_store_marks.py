"""Replay marks: triggers at or below how far their (station or global alias, topic,
partition) was scheduled are dropped; marks only move forward and live in the meta hash."""

from __future__ import annotations

from parsers.records import Source
from store.keys import Keys
from store.marks import ScheduleMarks
from store.windows import Trigger

K = Keys("sf")


def _t(station, offset, topic="RT", partition=0, alias="station_realtime_data"):
    return Trigger(station, alias, Source(topic, partition, offset, 0))


def _meta(r, *stations):
    for s in stations:
        r.hset(K.meta(s), "hwm:RT:0", 1)  # the window write created the meta hash
    r.hset(K.global_meta("environment_calendar"), "hwm:CAL:0", 1)


def test_scheduled_triggers_are_dropped_on_replay(fake_redis):
    _meta(fake_redis, "S1", "S2")
    marks = ScheduleMarks(fake_redis)
    first = [_t("S1", 5), _t("S1", 7), _t("S2", 6), _t("S1", 3, partition=1)]
    fresh, advance, replayed = marks.filter(first)
    assert fresh == first and replayed == 0
    assert advance == {(K.meta("S1"), "sm:RT:0"): 7, (K.meta("S2"), "sm:RT:0"): 6, (K.meta("S1"), "sm:RT:1"): 3}
    marks.advance(advance)
    again = [_t("S1", 7), _t("S1", 8), _t("S2", 6), _t("S1", 4, partition=1), _t("S3", 1)]
    fresh, advance, replayed = marks.filter(again)
    assert fresh == [_t("S1", 8), _t("S1", 4, partition=1), _t("S3", 1)] and replayed == 2
    assert marks.read("S1") == {"RT:0": 7, "RT:1": 3}


def test_marks_never_move_back_and_need_the_meta_hash(fake_redis):
    _meta(fake_redis, "S1")
    marks = ScheduleMarks(fake_redis)
    marks.advance({(K.meta("S1"), "sm:RT:0"): 9})
    marks.advance({(K.meta("S1"), "sm:RT:0"): 4})  # a late advance of an older poll
    assert marks.read("S1") == {"RT:0": 9}
    marks.advance({(K.meta("gone"), "sm:RT:0"): 4})  # windows expired: no mark without them
    assert not fake_redis.exists(K.meta("gone"))


def test_global_triggers_are_marked_on_the_global_alias(fake_redis):
    _meta(fake_redis)
    marks = ScheduleMarks(fake_redis)
    cal = _t(None, 2, topic="CAL", alias="environment_calendar")
    fresh, advance, _ = marks.filter([cal])
    marks.advance(advance)
    assert marks.read(None, "environment_calendar") == {"CAL:0": 2}
    assert marks.filter([cal]) == ([], {}, 1)


def test_an_ingester_restricted_to_some_modules_keeps_its_own_marks(fake_redis):
    _meta(fake_redis, "S1")
    every = ScheduleMarks(fake_redis)
    some = ScheduleMarks(fake_redis, modules=["SOH_model", "load_prediction"])
    every.advance(every.filter([_t("S1", 5)])[1])
    assert some.filter([_t("S1", 5)])[2] == 0  # not scheduled by *this* ingester yet
    some.advance(some.filter([_t("S1", 5)])[1])
    assert some.filter([_t("S1", 5)])[2] == 1
    assert every.read("S1") == {"RT:0": 5} and some.read("S1") == {"RT:0": 5}
