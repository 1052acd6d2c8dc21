"""Rate control (`min_interval_s`): triggers inside the interval are absorbed into one trailing
run that starts when the interval ends; its batch expects the station and waits for it."""

from __future__ import annotations

import json

import pytest
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from parsers.batches import PlannedRun
from parsers.catalogue import Catalogue, CatalogueError, default_catalogue
from store.pending import PendingRuns
from store.tracker import BatchTracker
from workers.scheduling import BATCHES_META, release_deferred, schedule

NOW = 1_763_524_800_000
MOD = "evaluation_model"
CAT = Catalogue.build(module_overrides={MOD: {"min_interval_s": 10}})


def _run(batch: int, station: str = "S1", module: str = MOD) -> PlannedRun:
    return PlannedRun(station, module, f"{module}:T:0:{batch}")


def _took(r, station: str, job_id: str, now_ms: int) -> dict[str, list[str]]:
    return PendingRuns(r).take(station, job_id, now_ms)


def _expected(r, batch: str) -> list[str] | None:
    b = BatchTracker(r).get(batch)
    return json.loads(b["expected"]) if b else None


def test_defaults_come_from_the_catalogue_and_zero_is_allowed():
    cat = default_catalogue()
    assert cat.module("load_prediction").min_interval_s == 60
    assert cat.module("evaluation_model").min_interval_s == 5
    assert cat.module("station_guidance").min_interval_s == 5
    assert cat.module("customer_mining").min_interval_s == 0
    assert Catalogue.build(module_overrides={MOD: {"min_interval_s": 0}}).module(MOD).min_interval_s == 0
    with pytest.raises(CatalogueError, match="min_interval_s"):
        Catalogue.build(module_overrides={MOD: {"min_interval_s": -1}})


def test_triggers_inside_the_interval_become_one_deferred_run(fake_redis):
    r = fake_redis
    first = schedule(r, CAT, [_run(1)], now_ms=NOW)
    assert len(first.enqueued) == 1 and not first.deferred
    assert _took(r, "S1", first.enqueued[0], NOW + 5) == {MOD: [f"{MOD}:T:0:1"]}

    # the first trigger after the run: deferred to NOW + 10 s, its batch expects the station and
    # its deadline covers the deferral; no job yet
    second = schedule(r, CAT, [_run(2)], now_ms=NOW + 3000)
    assert second.deferred == {MOD: 1} and second.runs == 1 and not second.enqueued
    assert _expected(r, f"{MOD}:T:0:2") == ["S1"]
    assert int(BatchTracker(r).get(f"{MOD}:T:0:2")["deadline"]) == NOW + 10_000 + 5000
    assert PendingRuns(r).pending("S1") == {}
    assert PendingRuns(r).next_deferred() == NOW + 10_000

    # later triggers in the interval are absorbed by the deferred run (rate limit, not coalescing)
    third = schedule(r, CAT, [_run(3), _run(3, "S2")], now_ms=NOW + 4000)
    assert third.rate_limited == {MOD: 1} and not third.absorbed
    assert _expected(r, f"{MOD}:T:0:3") == ["S2"]  # S2 never ran: not limited
    assert len(third.enqueued) == 1
    assert list(Job.fetch(third.enqueued[0], connection=r, serializer=JSONSerializer).args) == [["S2"]]
    fourth = schedule(r, CAT, [_run(4)], now_ms=NOW + 9000)
    assert fourth.rate_limited == {MOD: 1} and _expected(r, f"{MOD}:T:0:4") is None

    # nothing is released before the interval ends
    assert not release_deferred(r, CAT, now_ms=NOW + 9999).released
    rel = release_deferred(r, CAT, now_ms=NOW + 10_000)
    assert rel.released == {MOD: 1} and len(rel.enqueued) == 1 and rel.next_due_ms is None
    job = Job.fetch(rel.enqueued[0], connection=r, serializer=JSONSerializer)
    assert list(job.args) == [["S1"]] and job.meta[BATCHES_META] == {"S1": [f"{MOD}:T:0:2"]}
    assert int(r.hget("sf:counters:triggers", f"{MOD}:released")) == 1
    assert PendingRuns(r).next_deferred() is None
    # released twice (another sweeper): nothing more
    assert not release_deferred(r, CAT, now_ms=NOW + 10_001).released

    # the trailing run is pending now: a trigger before its job starts is coalesced as usual
    fifth = schedule(r, CAT, [_run(5)], now_ms=NOW + 10_500)
    assert fifth.absorbed == {MOD: 1} and not fifth.rate_limited
    assert _took(r, "S1", rel.enqueued[0], NOW + 11_000) == {MOD: [f"{MOD}:T:0:2"]}

    # the release counts as the run: the next trigger waits for release + interval
    sixth = schedule(r, CAT, [_run(6)], now_ms=NOW + 12_000)
    assert sixth.deferred == {MOD: 1}
    assert PendingRuns(r).next_deferred() == NOW + 20_000


def test_zero_interval_keeps_every_trigger_after_a_run_immediate(fake_redis):
    r = fake_redis
    cat = Catalogue.build(module_overrides={MOD: {"min_interval_s": 0}})
    first = schedule(r, cat, [_run(1)], now_ms=NOW)
    _took(r, "S1", first.enqueued[0], NOW + 1)
    second = schedule(r, cat, [_run(2)], now_ms=NOW + 2)
    assert len(second.enqueued) == 1 and not second.deferred and not second.rate_limited
    assert PendingRuns(r).pending("S1")[MOD] == f"{MOD}:T:0:2"
    assert PendingRuns(r).deferred("S1") == {}  # no rate state kept without an interval
    assert PendingRuns(r).next_deferred() is None


def test_an_unlimited_module_runs_now_while_a_sibling_is_deferred(fake_redis):
    r = fake_redis
    first = schedule(r, CAT, [_run(1), _run(1, module="SOH_model")], now_ms=NOW)
    _took(r, "S1", first.enqueued[0], NOW + 1)
    cat = Catalogue.build(module_overrides={MOD: {"min_interval_s": 10}, "SOH_model": {"min_interval_s": 0}})
    second = schedule(r, cat, [_run(2), _run(2, module="SOH_model")], now_ms=NOW + 1000)
    assert second.deferred == {MOD: 1} and len(second.enqueued) == 1
    job = Job.fetch(second.enqueued[0], connection=r, serializer=JSONSerializer)
    assert job.meta[BATCHES_META] == {"S1": ["SOH_model:T:0:2"]}  # the deferred batch is not this job's
    # the job takes only what may run now; the deferred run stays deferred
    assert _took(r, "S1", second.enqueued[0], NOW + 1001) == {"SOH_model": ["SOH_model:T:0:2"]}
    rel = release_deferred(r, cat, now_ms=NOW + 10_000)
    assert rel.released == {MOD: 1}
    assert _took(r, "S1", rel.enqueued[0], NOW + 10_001) == {MOD: [f"{MOD}:T:0:2"]}


def test_replayed_deferred_trigger_is_the_same_run(fake_redis):
    r = fake_redis
    first = schedule(r, CAT, [_run(1)], now_ms=NOW)
    _took(r, "S1", first.enqueued[0], NOW + 1)
    schedule(r, CAT, [_run(2)], now_ms=NOW + 1000)
    again = schedule(r, CAT, [_run(2)], now_ms=NOW + 2000)
    assert again.replayed == 1 and not again.rate_limited and not again.enqueued and again.runs == 1
    assert _expected(r, f"{MOD}:T:0:2") == ["S1"] and again.batches_existing == 1
    assert release_deferred(r, CAT, now_ms=NOW + 10_000).released == {MOD: 1}


def test_a_late_release_moves_the_deferred_run_to_the_new_batch(fake_redis):
    """Workers away past the deferred batch's deadline: that batch times out (its deadline
    passed), and the next trigger's batch expects the station instead; the run happens once."""
    r = fake_redis
    first = schedule(r, CAT, [_run(1)], now_ms=NOW)
    _took(r, "S1", first.enqueued[0], NOW + 1)
    schedule(r, CAT, [_run(2)], now_ms=NOW + 1000)  # deferred to NOW + 10 s, deadline NOW + 15 s
    late = schedule(r, CAT, [_run(3)], now_ms=NOW + 16_000)
    assert late.deferred == {MOD: 1} and _expected(r, f"{MOD}:T:0:3") == ["S1"]
    rel = release_deferred(r, CAT, now_ms=NOW + 16_001)
    assert _took(r, "S1", rel.enqueued[0], NOW + 16_002) == {MOD: [f"{MOD}:T:0:3"]}


def test_the_index_survives_a_release_racing_a_new_deferral(fake_redis):
    """release_deferred removes a station's index entry before its script and re-adds what is
    still deferred, so a deferral marked in between is still found."""
    r = fake_redis
    cat = Catalogue.build(module_overrides={MOD: {"min_interval_s": 10}, "SOH_model": {"min_interval_s": 20}})
    first = schedule(r, cat, [_run(1), _run(1, module="SOH_model")], now_ms=NOW)
    _took(r, "S1", first.enqueued[0], NOW + 1)
    schedule(r, cat, [_run(2), _run(2, module="SOH_model")], now_ms=NOW + 1000)
    rel = release_deferred(r, cat, now_ms=NOW + 10_000)
    assert rel.released == {MOD: 1} and rel.next_due_ms == NOW + 20_000
    assert PendingRuns(r).next_deferred() == NOW + 20_000
    assert release_deferred(r, cat, now_ms=NOW + 20_000).released == {"SOH_model": 1}


def test_queue_holds_no_job_for_a_station_with_only_deferred_runs(fake_redis):
    r = fake_redis
    first = schedule(r, CAT, [_run(1)], now_ms=NOW)
    _took(r, "S1", first.enqueued[0], NOW + 1)
    Queue("stationflow", connection=r, serializer=JSONSerializer).empty()
    schedule(r, CAT, [_run(2)], now_ms=NOW + 1000)
    assert Queue("stationflow", connection=r, serializer=JSONSerializer).count == 0


def test_min_interval_s_from_toml_and_environment(tmp_path):
    from stationflow.settings import ConfigError, Settings

    cfg = tmp_path / "s.toml"
    cfg.write_text("[modules.evaluation_model]\nmin_interval_s = 0\n[modules.SOH_model]\nmin_interval_s = 120\n")
    s = Settings.load(cfg, env={})
    assert s.catalogue.module(MOD).min_interval_s == 0 and s.catalogue.module("SOH_model").min_interval_s == 120
    env = {"STATIONFLOW_MODULES": '{"evaluation_model": {"min_interval_s": 2.5}}'}
    s = Settings.load(cfg, env=env)
    assert s.catalogue.module(MOD).min_interval_s == 2.5 and s.catalogue.module("SOH_model").min_interval_s == 120
    with pytest.raises(ConfigError, match="min_interval_s"):
        Settings.load(cfg, env={"STATIONFLOW_MODULES": '{"evaluation_model": {"min_interval_s": -1}}'})
    from stationflow.settings.model import module_to_dict  # what `config check --full` prints

    assert module_to_dict(Settings.from_dict({}).catalogue.module(MOD))["min_interval_s"] == 5.0


def test_deferred_index_buckets_are_merged_earliest_first(fake_redis):
    """With index buckets (Redis Cluster) each station's deferral is indexed in its own
    bucket; the readers merge every bucket: the earliest not-before first, `limit` in all."""
    r = fake_redis
    r.stationflow_index_buckets = 8
    p = PendingRuns(r)
    stations = [f"S{i}" for i in range(40)]
    for i, s in enumerate(stations):
        first = schedule(r, CAT, [_run(1, s)], now_ms=NOW + i)  # S<i> may run again at NOW + 10 s + i
        _took(r, s, first.enqueued[0], NOW + i + 1)
        assert schedule(r, CAT, [_run(2, s)], now_ms=NOW + 1000 + i).deferred == {MOD: 1}
    used = {p.keys.deferred_of(s) for s in stations}
    assert len(used) > 4 and all(k.startswith("sf:deferred:{b") for k in used)
    assert not r.exists("sf:deferred")
    assert p.next_deferred() == NOW + 10_000
    assert p.deferred_due(NOW + 10_004, limit=3) == ["S0", "S1", "S2"]
    assert sorted(p.deferred_due(NOW + 20_000)) == sorted(stations)
    rel = release_deferred(r, CAT, now_ms=NOW + 10_020, limit=25)
    assert rel.released == {MOD: 21}  # S0..S20 were due, in groups of 16
    grouped = [Job.fetch(j, connection=r, serializer=JSONSerializer).args[0] for j in rel.enqueued]
    assert [len(g) for g in grouped] == [16, 5] and sorted(sum(grouped, [])) == sorted(stations[:21])
    assert sorted(p.deferred_due(NOW + 20_000)) == sorted(stations[21:])
    assert release_deferred(r, CAT, now_ms=NOW + 20_000).released == {MOD: 19}
    assert p.next_deferred() is None and not any(r.exists(k) for k in used)
