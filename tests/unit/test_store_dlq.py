"""Dead letters and counters. Also run on a real redis-server by
tests/integration/test_store_dlq_redis.py (which overrides `r`)."""

from __future__ import annotations

import time

import pytest

from store.counters import Counters
from store.dlq import DeadLetter, DeadLetters

T0 = 1_763_524_800_000


@pytest.fixture
def r(fake_redis):
    return fake_redis


def entry(offset, reason="bad_json", element_index=None, raw=b'{"a": ', topic="SCHEDULE-DEVICE-METER"):
    return DeadLetter(topic, 1, offset, T0 + offset, reason, f"detail {offset}", raw, element_index)


def test_add_is_idempotent_per_topic_partition_offset_element(r):
    dlq = DeadLetters(r, maxlen=1000)
    ids = dlq.add([entry(1), entry(2, element_index=0), entry(2, element_index=1)], now_ms=T0)
    assert all(ids) and len(set(ids)) == 3
    again = dlq.add([entry(1), entry(2, element_index=0), entry(3)], now_ms=T0 + 5)
    assert again[:2] == [None, None] and again[2]
    assert dlq.count() == 4
    assert dlq.counts() == {("SCHEDULE-DEVICE-METER", "bad_json"): 4}


def test_entries_hold_every_field_and_raw_is_truncated(r):
    dlq = DeadLetters(r, maxlen=1000, raw_max_bytes=8)
    raw = b"\xff\xfe not utf8 and long"
    (eid,) = dlq.add([DeadLetter("SCHEDULE-CAR-PRICE", 2, 99, T0, "bad_field_value", "x" * 900, raw, 3)],
                     now_ms=T0 + 7)
    got = dlq.get(eid)
    assert got == {"id": eid, "topic": "SCHEDULE-CAR-PRICE", "partition": 2, "offset": 99, "ts": T0,
                   "reason": "bad_field_value", "detail": "x" * 500, "element_index": 3, "raw": raw[:8],
                   "raw_len": len(raw), "dead_at": T0 + 7}
    assert dlq.show(eid) == got
    assert dlq.get("0-1") is None


def test_list_pages_oldest_first_and_latest_newest_first(r):
    """One stream keeps the order of the writes; buckets (a cluster) merge by stream id, then
    bucket, so entries written in the same millisecond sort by bucket, the same way each time."""
    dlq = DeadLetters(r, maxlen=1000)
    dlq.add([entry(i) for i in range(5)], now_ms=T0)
    every = dlq.list(count=10)
    assert sorted(e["offset"] for e in every) == [0, 1, 2, 3, 4]
    if dlq.keys.buckets == 1:
        assert [e["offset"] for e in every] == [0, 1, 2, 3, 4]
    first = dlq.list(count=2)
    nxt = dlq.list(count=10, after=first[-1]["id"])
    assert first + nxt == every and len(first) == 2
    assert dlq.latest(2) == every[::-1][:2] and dlq.latest(9) == every[::-1]
    assert list(dlq.iter(newest_first=True, page=2)) == every[::-1]
    assert list(dlq.iter(newest_first=False, page=2)) == every
    assert nxt[0]["element_index"] is None


def one_bucket(dlq, n):
    """`n` offsets whose dead letters share offset 0's bucket (every offset on one Redis), and
    that bucket's stream and seen-index: the cases below watch one stream at work."""
    b = dlq.keys.dlq_bucket("SCHEDULE-DEVICE-METER", 1, 0)
    offsets = [o for o in range(200 * n) if dlq.keys.dlq_bucket("SCHEDULE-DEVICE-METER", 1, o) == b][:n]
    stream, seen, _ = dlq.keys.dlq_bucket_keys(b)
    return offsets, stream, seen


def test_stream_is_capped_but_counters_keep_counting(r):
    dlq = DeadLetters(r, maxlen=10)
    offsets, _, _ = one_bucket(dlq, 300)
    for start in range(0, 300, 50):
        dlq.add([entry(i, reason="too_deep") for i in offsets[start:start + 50]], now_ms=T0)
    assert dlq.count() < 300  # MAXLEN ~ trims in whole nodes, so "about" 10 (a bucket's share of it)
    assert dlq.counts()[("SCHEDULE-DEVICE-METER", "too_deep")] == 300


def test_a_replay_long_after_adds_nothing_while_the_entry_is_stored(r):
    # the seen-index has no clock horizon (it used to forget idents after 7 days)
    dlq = DeadLetters(r, maxlen=1000)
    dlq.add([entry(1), entry(2, element_index=4)], now_ms=T0)
    later = T0 + 400 * 86_400_000
    assert dlq.add([entry(1), entry(2, element_index=4)], now_ms=later) == [None, None]
    assert dlq.count() == 2
    assert {r.ttl(dlq.keys.dlq_bucket_keys(dlq.keys.dlq_bucket(e.topic, 1, e.offset))[1])
            for e in (entry(1), entry(2))} == {-1}  # no TTL either
    assert dlq.counts() == {("SCHEDULE-DEVICE-METER", "bad_json"): 2}


def test_seen_index_lasts_as_long_as_the_stream_holds_the_entries(r):
    dlq = DeadLetters(r, maxlen=10)
    offsets, stream, seen_key = one_bucket(dlq, 301)
    for start in range(0, 300, 20):
        dlq.add([entry(i) for i in offsets[start:start + 20]], now_ms=T0)
        time.sleep(0.003)  # stream ids of later calls in later milliseconds
    seen = {m.decode(): s for m, s in r.zrange(seen_key, 0, -1, withscores=True)}
    stored = dlq.list(count=1000)
    idents = {f"SCHEDULE-DEVICE-METER:1:{e['offset']}:" for e in stored}
    assert idents <= set(seen)  # every stored entry is guarded ...
    oldest_ms = int(stored[0]["id"].split("-")[0])
    assert all(s == oldest_ms for m, s in seen.items() if m not in idents)  # ... and nothing older
    assert len(seen) < 300
    assert all(x is None for x in dlq.add([entry(e["offset"]) for e in stored], now_ms=T0))
    assert dlq.add([entry(0)], now_ms=T0)[0] is not None  # trimmed long ago: stored again
    r.delete(stream)
    time.sleep(0.003)
    dlq.add([entry(offsets[300])], now_ms=T0)
    assert r.zcard(seen_key) == 1  # the stream was removed: so were its idents


def test_counters_helpers(r):
    c = Counters(r)
    pipe = r.pipeline(transaction=False)
    c.incr(pipe, "runs", "ok", 3)
    c.incr(pipe, "runs", "failed:timeout")
    c.incr(pipe, "runs", "zero", 0)
    c.incr_many(pipe, {("dlq", "T:bad_json"): 2})
    pipe.execute()
    assert c.get("runs") == {"ok": 3, "failed:timeout": 1}
    assert c.groups() == ["dlq", "runs"]
    assert r.hget(c.keys.counters("runs"), "ok") == b"3"  # plain text for redis-cli (this process's bucket)
