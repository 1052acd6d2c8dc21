"""A station job's closing writes (store/job_writes.py) and script pipelines (store/scripts.py):
the same keys and values as WindowStore.store_output / advance_cursor, NOSCRIPT recovery
that runs every command exactly once, and tracker counters corrected after the fact."""

from __future__ import annotations

import pytest
from redisstate import redis_state

from parsers.catalogue import default_catalogue
from store.job_writes import JobWrites
from store.scripts import LuaScript, ScriptPipeline
from store.tracker import BatchTracker, NewBatch, Report
from store.windows import WindowStore

T0 = 1_763_524_800_000
S = "4000000000000000001"
CAT = default_catalogue()


def _dump(r, pattern: str) -> dict:
    """Every key matching `pattern`: type, value and TTL set (not its exact value)."""
    return redis_state(r, pattern)


@pytest.mark.parametrize("keep", [1, 3])
def test_same_writes_as_store_output_and_advance_cursor(fake_redis, keep):
    a = WindowStore(fake_redis, CAT, "a", outputs_keep=keep)
    b = JobWrites(CAT, "b", outputs_keep=keep)
    for i in range(4):
        ts = T0 + i
        outs = [("load_prediction", {"station_id": S, "p": [i, 1.5]}), ("SOH_model", {"station_id": S, "v": i})]
        for mod, value in outs:
            a.store_output(S, mod, value, ts)
        a.advance_cursor(S, "station_guidance", "car_order", 5 - i)  # moves once, never back
        a.advance_cursor(S, "evaluation_model", "car_order", i)
        sp = ScriptPipeline(fake_redis)
        at = b.queue(sp, S, outs, [("station_guidance", "car_order", 5 - i), ("evaluation_model", "car_order", i)],
                     ts)
        assert sp.execute()[at] == [5, i]
    got_a = {k.replace(b"a:", b"x:", 1): v for k, v in _dump(fake_redis, "a:*").items()}
    got_b = {k.replace(b"b:", b"x:", 1): v for k, v in _dump(fake_redis, "b:*").items()}
    assert got_a == got_b
    assert len(fake_redis.lrange(f"b:{{{S}}}:out:load_prediction", 0, -1)) == min(keep, 4)


def test_nothing_to_write_queues_nothing(fake_redis):
    sp = ScriptPipeline(fake_redis)
    assert JobWrites(CAT).queue(sp, S, [], [], T0) is None and len(sp) == 0


def test_flushed_scripts_are_sent_again_and_other_commands_run_once(fake_redis):
    r = fake_redis
    script = LuaScript("incr", "return redis.call('INCRBY', KEYS[1], ARGV[1])")
    sp = ScriptPipeline(r)
    sp.call(script, ["n"], [1])
    sp.execute()  # loads nothing: NOSCRIPT on the first call, then SCRIPT LOAD and again
    assert int(r.get("n")) == 1
    r.script_flush()
    sp = ScriptPipeline(r)
    sp.pipe.incr("plain")
    at = sp.call(script, ["n"], [10])
    sp.pipe.incr("plain")
    at2 = sp.call(script, ["n"], [100])
    replies = sp.execute()
    assert (replies[at], replies[at2]) == (11, 111) and int(r.get("plain")) == 2 and int(r.get("n")) == 111


def test_other_errors_are_raised_after_the_pipeline_ran(fake_redis):
    r = fake_redis
    r.set("s", "text")
    sp = ScriptPipeline(r)
    sp.pipe.hset("s", "f", 1)  # WRONGTYPE
    sp.pipe.incr("after")
    with pytest.raises(Exception, match="WRONGTYPE"):
        sp.execute()
    assert int(r.get("after")) == 1


def test_report_counters_are_exact_after_claims_duplicates_and_unknown_batches(fake_redis):
    t = BatchTracker(fake_redis)
    t.create([NewBatch("m:T:0:1", "load_prediction", ("A", "B"), 5.0)], T0)
    ok = b'{"station_id":"A"}'
    t.report([Report("m:T:0:1", "A", "ok", ok)], T0)  # recorded
    t.report([Report("m:T:0:1", "A", "ok", ok), Report("nope:T:0:1", "A", "none")], T0)  # duplicate, unknown
    rep = t.report([Report("m:T:0:1", "B", "failed", None, "timeout")], T0)  # claims the batch
    assert rep.statuses == ["claimed"] and len(rep.claimed) == 1
    c = t.counters()
    assert (c["report_recorded"], c["report_duplicate"], c["report_unknown"], c["report_claimed"]) == (1, 1, 1, 1)
    assert c["stations_ok"] == 1 and c["stations_failed:timeout"] == 1 and c.get("stations_none", 0) == 0


def test_counter_increments_as_one_script_call(fake_redis):
    from store.counters import queue_incr_many

    sp = ScriptPipeline(fake_redis)
    queue_incr_many(sp, "c", {"a:ok": 2, "a:us": 1500, "zero": 0})
    queue_incr_many(sp, "c", {})  # nothing queued
    assert len(sp) == 1
    sp.execute()
    queue_incr_many(sp := ScriptPipeline(fake_redis), "c", {"a:ok": -1})
    sp.execute()
    assert fake_redis.hgetall("c") == {b"a:ok": b"1", b"a:us": b"1500"}
