"""Batch tracker scripts (fakeredis with Lua): reports, completion, expiry, re-claim, results."""

from __future__ import annotations

import math

import orjson
import pytest

from store.tracker import (
    BatchTracker,
    NewBatch,
    Report,
    TrackerError,
    UnserialisableResult,
    envelope,
    normalise_result,
)

NOW = 1_763_524_800_000
B = "load_prediction:SCHEDULE-STATION-REALTIME-DATA:3:1184467"


def ok(station: str, value: dict, batch: str = B) -> Report:
    n = normalise_result(station, value)
    return Report(batch, station, "ok", n.json, None, n.nonfinite, n.mismatch, n.wrapped)


@pytest.fixture
def tracker(fake_redis) -> BatchTracker:
    t = BatchTracker(fake_redis, reclaim_after_s=30)
    assert t.create([NewBatch(B, "load_prediction", ("S2", "S1", "S3"), 5.0)], NOW) == [True]
    return t


def test_create_is_idempotent_and_never_empty(tracker):
    assert tracker.create([NewBatch(B, "load_prediction", ("S9",), 5.0)], NOW + 999) == [False]
    b = tracker.get(B)
    assert orjson.loads(b["expected"]) == ["S1", "S2", "S3"] and b["n_expected"] == "3"
    assert int(b["deadline"]) == NOW + 5000 and b["state"] == "open"
    with pytest.raises(TrackerError):
        tracker.create([NewBatch("x:T:0:1", "load_prediction", (), 5.0)], NOW)


def test_last_report_claims_and_results_are_sorted(tracker):
    r1 = tracker.report([ok("S3", {"p": 3}), Report(B, "S2", "failed", None, "timeout")], NOW + 10)
    assert r1.statuses == ["recorded", "recorded"] and not r1.claimed
    r2 = tracker.report([ok("S1", {"p": 1, "station_id": "WRONG"})], NOW + 20)
    assert r2.statuses == ["claimed"]
    (batch,) = r2.claimed
    assert [s for s, _ in batch.results] == ["S1", "S3"]
    assert batch.count("ok") == 2 and batch.count("failed") == 1 and batch.fields["f:timeout"] == "1"
    assert batch.fields["station_id_mismatch"] == "1"
    env = orjson.loads(envelope(batch, 1763524804.417))
    assert env == {"batch_id": B, "module": "load_prediction", "timestamp": 1763524804.417, "stations_count": 2,
                   "results": [{"station_id": "S1", "p": 1}, {"station_id": "S3", "p": 3}]}
    assert tracker.get(B)["state"] == "uploading"
    assert tracker.finish([B], NOW + 30) == [True]
    assert tracker.finish([B], NOW + 31) == [False]  # counted once
    assert tracker.counters()["uploaded"] == 1


def test_duplicate_unexpected_unknown_and_late_reports(tracker):
    tracker.report([ok("S1", {"a": 1})], NOW)
    rep = tracker.report([ok("S1", {"a": 2}), ok("S9", {"a": 9}), ok("S1", {"a": 1}, batch="nope:T:0:1")], NOW)
    assert rep.statuses == ["duplicate", "not_expected", "unknown"]
    claim = tracker.claim_due(NOW + 5000, 10)
    assert [b.batch_id for b in claim.claimed] == [B] and claim.timed_out == 2
    assert tracker.finish([B], NOW + 5001) == [True]
    late = tracker.report([ok("S2", {"a": 2})], NOW + 6000)
    assert late.statuses == ["late"] and not late.claimed
    b = tracker.get(B)
    assert b["late"] == "1" and b["ok"] == "1" and b["timed_out"] == "2" and "r:S2" not in b
    assert tracker.claim_due(NOW + 99_000, 10).claimed == []  # finished: nothing more to claim


def test_expiry_only_after_deadline_and_once(tracker):
    assert tracker.claim_due(NOW + 4999, 10).claimed == []
    tracker.report([ok("S1", {"a": 1})], NOW)
    first = tracker.claim_due(NOW + 5000, 10)
    second = tracker.claim_due(NOW + 5001, 10)
    assert len(first.claimed) == 1 and second.claimed == []


def test_stale_upload_is_reclaimed_after_reclaim_after(tracker):
    tracker.report([ok("S1", {"a": 1}), ok("S2", {"a": 2}), ok("S3", {"a": 3})], NOW)
    assert tracker.claim_due(NOW + 29_000, 10).claimed == []  # the claimer is still sending
    again = tracker.claim_due(NOW + 30_001, 10)
    assert [b.status for b in again.claimed] == ["reclaimed"] and len(again.claimed[0].results) == 3
    assert tracker.get(B)["reclaims"] == "1"


def test_batch_without_ok_is_skipped_not_uploaded(fake_redis):
    t = BatchTracker(fake_redis)
    t.create([NewBatch("m:T:0:1", "SOH_model", ("A", "B"), 5.0)], NOW)
    rep = t.report([Report("m:T:0:1", "A", "none"), Report("m:T:0:1", "B", "failed", None, "not_ready")], NOW)
    assert rep.statuses == ["recorded", "skipped"] and rep.skipped == ["m:T:0:1"] and not rep.claimed
    assert t.get("m:T:0:1")["state"] == "skipped" and t.due_count() == 0
    t.create([NewBatch("m:T:0:2", "SOH_model", ("A",), 5.0, upload_empty=True)], NOW)
    rep = t.report([Report("m:T:0:2", "A", "none")], NOW)
    assert rep.statuses == ["claimed"] and rep.claimed[0].results == []


def test_expired_batch_without_ok_is_skipped(fake_redis):
    t = BatchTracker(fake_redis)
    t.create([NewBatch("m:T:0:1", "SOH_model", ("A", "B"), 1.0)], NOW)
    c = t.claim_due(NOW + 1000, 10)
    assert c.skipped == ["m:T:0:1"] and c.timed_out == 2 and t.get("m:T:0:1")["state"] == "skipped"


def test_report_rejects_unknown_outcomes(tracker):
    with pytest.raises(TrackerError):
        tracker.report([Report(B, "S1", "great")], NOW)
    with pytest.raises(TrackerError):
        tracker.report([Report(B, "S1", "failed", None, "bad_luck")], NOW)


def test_normalise_result():
    n = normalise_result("S1", {"x": [1.0, math.nan, math.inf], "station_id": "S1"})
    assert n.value == {"station_id": "S1", "x": [1.0, None, None]} and n.nonfinite == 2 and not n.mismatch
    assert orjson.loads(n.json) == n.value
    w = normalise_result("S1", [1, 2])
    assert w.value == {"station_id": "S1", "value": [1, 2]} and w.wrapped
    assert normalise_result("S1", {"null_is_fine": None}).nonfinite == 0
    for bad in ({1, 2}, {"k": object()}, {1: "non-string key"}, {"big": 1 << 70}):
        with pytest.raises(UnserialisableResult):
            normalise_result("S1", bad)
