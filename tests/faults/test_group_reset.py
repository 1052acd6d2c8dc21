"""Scenario 10: replays. (a) After everything was uploaded, an ingester in a *new* consumer
group re-reads every topic from the beginning (as a group change, an offset reset or a replay
hours later does): 0 batches created, 0 runs, 0 uploads, because the triggers of every
message were marked scheduled beside the windows. (b) An ingester SIGKILLed between the window
write and the scheduling of a poll (the test hook exits right after the write) and restarted:
each redelivered message, already in the windows but not yet scheduled, makes exactly one
batch per module its readiness fires, uploaded once, each run once.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from harness import (
    Proc,
    Sender,
    audit_batches,
    crashing_ingester,
    end_offsets,
    figures,
    ingester,
    now_ms,
    read_batches,
    scaled,
    scenario,
    wait_batches_finished,
    wait_caught_up,
    worker,
)
from model import station_of
from slow_algorithms import env as slow_env
from slow_algorithms import modules_config, read_calls

from parsers.readiness import plan_runs as readiness_plan
from stationflow.local import wait_for
from stationflow.traffic import Traffic
from store.windows import WindowStore

pytestmark = [pytest.mark.faults, pytest.mark.heavy(52)]


def _uploads(bootstrap: str, cat: Any) -> int:
    """The module-output topics' end offsets, summed: grows with every upload."""
    return sum(end_offsets(bootstrap, [cat.module(m).output_topic for m in cat.local_modules()]).values())


def test_a_new_group_replaying_everything_creates_nothing(kafka_bootstrap: str, private_redis: Any,
                                                          tmp_path: Path) -> None:
    sc = scenario(kafka_bootstrap, private_redis.url, tmp_path, prefix="gr", group="g-first",
                  extra={"modules": modules_config()})
    cat, cfg = sc.cat, sc.cfg
    n_messages = scaled(6_000, 1_200)
    delay, calls = tmp_path / "delay_s", tmp_path / "calls"
    delay.write_text("0")
    messages = Traffic(stations=30, seed=10, start_ms=now_ms(), catalogue=cat).take(n_messages)
    ing = ingester(tmp_path, cfg, "gr-ingest").start()
    wrk = worker(tmp_path, cfg, "gr-worker", env=slow_env(delay, calls_file=calls)).start()
    sender = Sender(kafka_bootstrap, cat)
    r = private_redis.client()
    try:
        for m in messages:
            sender.send(m.topic, m.value, m.timestamp_ms)
        produced = sender.results()
        wait_caught_up(kafka_bootstrap, "g-first", produced, 300, procs=[ing])
        before = wait_batches_finished(r, "gr", 240)
        ing.stop(15)
        runs_before, uploads_before = len(read_calls(calls)), _uploads(kafka_bootstrap, cat)
        replayer = ingester(tmp_path, cfg, "gr-replay", "--group", "g-second").start()
        wait_caught_up(kafka_bootstrap, "g-second", produced, 300, procs=[replayer])
        time.sleep(3.0)  # anything scheduled would be queued, run and swept by now
        after = read_batches(r, "gr")
        runs_after, uploads_after = len(read_calls(calls)), _uploads(kafka_bootstrap, cat)
        replayed = int(r.hget("gr:counters:ingest", "triggers_replayed") or 0)
        queued = int(r.llen("rq:queue:stationflow"))
        assert replayer.alive() and wrk.alive(), replayer.log() + wrk.log()
    finally:
        for p in (ing, wrk, *(x for x in [locals().get("replayer")] if x is not None)):
            p.stop(15)
        sender.close()

    new = sorted(set(after) - set(before))
    figures("group_reset", messages=n_messages, batches_before=len(before), batches_created_by_replay=len(new),
            runs_by_replay=runs_after - runs_before, uploads_by_replay=uploads_after - uploads_before,
            triggers_replayed=replayed, jobs_queued_by_replay=queued, losses=0, duplicates=0, dead_letters=0)
    assert len(before) > 0 and runs_before > 0 and uploads_before > 0
    assert replayed > 0
    assert new == [] and queued == 0
    assert runs_after == runs_before and uploads_after == uploads_before


def _one_message_per_station(messages: list[Any], cat: Any, topics: set[str]) -> list[Any]:
    """Per station, its first single-station message of a triggering station topic: the
    messages of the crashed part, so no two of them share a station (nothing coalesces)."""
    out: dict[str, Any] = {}
    for m in messages:
        sid = station_of(m.value)
        if m.topic in topics and sid is not None and sid not in out:
            out[sid] = m
    return list(out.values())


def _expected_modules(cat: Any, store: WindowStore, station: str, topic: str) -> set[str]:
    """The modules a message of `topic` makes run at a loaded station: the ingester's own rule
    (parsers.readiness) on what the station holds."""
    names = [t.alias for t in cat.input_topics] + list(cat.local_modules())
    have = store.present([station], names).get(station, set())
    return set(readiness_plan(cat, (cat.topic(topic).alias,), have).runs) & set(cat.local_modules())


def test_sigkill_between_window_write_and_scheduling_schedules_once(kafka_bootstrap: str, private_redis: Any,
                                                                    tmp_path: Path) -> None:
    """The crashed part is one triggering message per station, sent once every earlier batch
    finished and with no rate control, so each of its messages must make exactly one batch per
    module its readiness fires, expecting its station, uploaded once, each run once."""
    modules = {m: {**cfg, "min_interval_s": 0} for m, cfg in modules_config().items()}
    sc = scenario(kafka_bootstrap, private_redis.url, tmp_path, prefix="gk", group="g-crash",
                  extra={"modules": modules})
    cat, cfg = sc.cat, sc.cfg
    triggering = {a for m in cat.local_modules() for a in cat.by_module[m].trigger_set}
    topics = {t.topic for t in cat.input_topics if t.kind not in ("orders", "global") and t.alias in triggering}
    orders = {t.topic for t in cat.input_topics if t.kind == "orders"}  # a timer close would trigger later
    n_stations = scaled(30, 10)
    traffic = Traffic(stations=n_stations, seed=11, start_ms=now_ms(), catalogue=cat)
    loading = [m for m in traffic.take(scaled(3_000, 600)) if m.topic not in orders]
    crashed = _one_message_per_station(traffic.take(scaled(3_000, 600)), cat, topics)
    calls = tmp_path / "calls"
    sender = Sender(kafka_bootstrap, cat)
    r = private_redis.client()
    store = WindowStore(r, cat, "gk")
    wrk = worker(tmp_path, cfg, "gk-worker", env=slow_env(tmp_path / "no_delay", calls_file=calls)).start()
    # every window loaded, every batch of that finished: nothing pending when the crash comes
    for m in loading:
        sender.send(m.topic, m.value, m.timestamp_ms)
    first = sender.results()
    clean = ingester(tmp_path, cfg, "gk-clean").start()
    wait_caught_up(kafka_bootstrap, "g-crash", first, 300, procs=[clean])
    clean.stop(15)
    wait_batches_finished(r, "gk", 120)
    since = now_ms()
    for m in crashed:
        sender.send(m.topic, m.value, m.timestamp_ms)
    sent = sender.results()
    # ... and the ingester dies right after its first window write, before scheduling it
    crashing: Proc = crashing_ingester(tmp_path, cfg, "gk-ingest", after_writes=1).start()
    try:
        wait_for(lambda: not crashing.alive(), 120, "the ingester to crash after its first write")
        assert crashing.popen is not None and crashing.popen.returncode == 137, crashing.log()
        at_kill = read_batches(r, "gk")
        written = [p for p in sent if _hwm(r, station_of(p.value), p) >= p.offset]
        unscheduled = [p for p in written if not any(b.endswith(_source(p)) for b in at_kill)]
        wants = {_source(p): _expected_modules(cat, store, station_of(p.value) or "", p.topic) for p in sent}
        crashing = ingester(tmp_path, cfg, "gk-ingest").start()
        wait_caught_up(kafka_bootstrap, "g-crash", first + sent, 300, procs=[crashing])
        batches = wait_batches_finished(r, "gk", 120)
        audit = audit_batches(r, "gk", kafka_bootstrap, cat, batches)
        assert crashing.alive() and wrk.alive(), crashing.log() + wrk.log()
    finally:
        crashing.stop(15)
        wrk.stop(15)
        sender.close()

    # per message: the batches its id names, against the modules its readiness fires
    problems, n_batches = [], 0
    for p in sent:
        station = station_of(p.value)
        assert station is not None
        made = {b.split(":", 1)[0]: h for b, h in batches.items() if b.endswith(_source(p))}
        n_batches += len(made)
        want = wants[_source(p)]
        if not want or set(made) != want:  # every one of them is a triggering message
            problems.append(f"{_source(p)} at {station}: batches of {sorted(made)}, readiness fires {sorted(want)}")
        for m, h in made.items():
            if sorted(k[2:] for k in h if k.startswith("e:")) != [station] or h.get("state") != "uploaded":
                problems.append(f"{m}{_source(p)}: {h}")
    later = {b for b, h in batches.items() if int(h.get("created", 0) or 0) >= since}
    extra = sorted(b for b in later if not any(b.endswith(_source(p)) for p in sent))
    runs = Counter((mod, st) for mod, st, ms in read_calls(calls) if ms >= since)
    twice = sorted(k for k, n in runs.items() if n != 1)
    figures("ingest_sigkill_before_schedule", messages=len(first) + len(sent), kills=1,
            messages_after_the_load=len(sent), written_not_scheduled_at_kill=len(unscheduled),
            batches_of_those_messages=n_batches, runs=sum(runs.values()), runs_not_once=len(twice),
            losses=len(problems), duplicates=audit.duplicates, dead_letters=0, **audit.as_figures())
    assert unscheduled, "the crash left nothing written but unscheduled: it tested nothing"
    assert problems == [] and extra == []  # exactly one batch per (module, message), with its station
    assert twice == [] and sum(runs.values()) == n_batches  # each of their runs once
    assert audit.unfinished == [] and audit.missing == [] and audit.duplicates == 0


def _source(p: Any) -> str:
    """The part of a batch id that names the message (`parsers.batches.batch_id`)."""
    return f":{p.topic}:{p.partition}:{p.offset}"


def _hwm(r: Any, station: str | None, p: Any) -> int:
    """How far the station's windows hold the message's partition (-1: not at all)."""
    v = r.hget(f"gk:{{{station}}}:meta", f"hwm:{p.topic}:{p.partition}")
    return int(v) if v is not None else -1
