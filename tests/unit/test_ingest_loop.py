"""The poll loop against a scripted fake consumer, with the real parsers and the real window
store and dead-letter store on fakeredis: ordering of write → schedule → commit, outages,
rebalances, backpressure, idle exit and counters."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import pytest
import redis
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from samplefiles import SAMPLES

from ingest.backpressure import QueueGate
from ingest.loop import Ingester
from ingest.options import LoopOptions
from ingest.process import Processor
from ingest.stats import IngestStats
from parsers.batches import PlannedRun
from parsers.catalogue import default_catalogue
from store.counters import Counters
from store.dlq import DeadLetters
from store.windows import WindowStore

CAT = default_catalogue()
ACDC = "SCHEDULE-DEVICE-HOST-ACDC"
PARAM = "SCHEDULE-STATION-PARAM"
#: record timestamps near the wall clock: device windows hide records older than their TTL
NOW_MS = int(time.time() * 1000)


def sample(topic: str) -> bytes:
    return (SAMPLES / f"{topic}.json").read_bytes()


def acdc(station: str, host: str = "52000000000088", power: float = 10.0) -> bytes:
    return json.dumps({"stationId": station, "hostCode": host, "acPower": power}).encode()


@pytest.fixture(autouse=True)
def _fresh_now() -> None:
    """Record times near the wall clock of each test, not of collection: in a long session the
    import-time clock is minutes old and device windows (TTL 60 s) would hide the records."""
    global NOW_MS
    NOW_MS = int(time.time() * 1000)


def record(topic: str, partition: int, offset: int, value: bytes | None, ts: int | None = None) -> Any:
    ts = NOW_MS if ts is None else ts
    return ConsumerRecord(topic, partition, -1, offset, ts, 0, None, value, [], None,
                          -1, len(value or b""), -1)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


class FakeConsumer:
    """Serves scripted polls; the rebalance listener is the Ingester itself."""

    def __init__(self, clock: FakeClock, polls: list[Any], partitions: list[tuple[str, int]]) -> None:
        self.clock = clock
        self.polls = list(polls)
        self.assigned = {TopicPartition(t, p) for t, p in partitions}
        self.paused_set: set[TopicPartition] = set()
        self.commits: list[dict[tuple[str, int], int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.closed = False
        self.ingester: Ingester | None = None
        self.events: list[str] = []

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        self.clock.t += timeout_ms / 1000 if not self.polls else 0.01
        if not self.polls:
            return {}
        step = self.polls.pop(0)
        if callable(step):
            step = step(self)
        out: dict[Any, list[Any]] = defaultdict(list)
        for r in step or []:
            tp = TopicPartition(r.topic, r.partition)
            if tp in self.paused_set:
                self.polls.insert(0, [x for x in step if TopicPartition(x.topic, x.partition) in self.paused_set])
                continue
            out[tp].append(r)
        return dict(out)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_set |= set(tps)
        self.events.append(f"pause {len(tps)}")

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_set -= set(tps)
        self.events.append(f"resume {len(tps)}")

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_set)

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append({(tp.topic, tp.partition): om.offset for tp, om in offsets.items()})
        self.events.append("commit")

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int | None:
        return None

    def close(self, autocommit: bool = False) -> None:
        self.closed = True

    def revoke(self, partitions: list[tuple[str, int]]) -> None:
        tps = [TopicPartition(t, p) for t, p in partitions]
        assert self.ingester is not None
        self.ingester.on_revoked(tps)
        self.assigned -= set(tps)


class Scheduler:
    """Records the runs; with replay marks (store.marks.MarkPlan) it records the marks as
    the real scheduler's marking step does (without reserving the runs)."""

    def __init__(self, consumer: FakeConsumer | None = None, r: Any = None) -> None:
        self.calls: list[list[PlannedRun]] = []
        self.fail: list[Exception] = []
        self.consumer = consumer
        self.r = r

    def __call__(self, runs: Any, marks: Any = None) -> None:
        if self.fail:
            raise self.fail.pop(0)
        self.calls.append(list(runs))
        if marks is not None:
            from store.marks import advance_marks
            from store.pending import PendingRuns

            stations = dict.fromkeys([*marks.stations, *(r.station for r in runs)])
            PendingRuns(self.r).mark({}, {}, 0, {s: marks.station_advance(
                s, [r.batch_id for r in runs if r.station == s]) for s in stations})
            advance_marks(self.r, marks.aliases)
        if self.consumer is not None:
            self.consumer.events.append("schedule")


class FlakyStore(WindowStore):
    """The real store, with scripted failures of apply()."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.fail: list[Exception] = []
        self.applies = 0

    def apply(self, messages: Any, now_ms: int) -> Any:
        if self.fail:
            raise self.fail.pop(0)
        self.applies += 1
        return super().apply(messages, now_ms)


def make(fake_redis: Any, polls: list[Any], partitions: list[tuple[str, int]] | None = None,
         **kw: Any) -> tuple[Ingester, FakeConsumer, Scheduler, FlakyStore, FakeClock]:
    clock = FakeClock()
    consumer = FakeConsumer(clock, polls, partitions or [(ACDC, 0), (ACDC, 1), (PARAM, 0)])
    sched = Scheduler(consumer, fake_redis)
    store = FlakyStore(fake_redis, CAT, "sf")
    dlq = DeadLetters(fake_redis, "sf", maxlen=1000, raw_max_bytes=64)
    stats = IngestStats()
    counters = Counters(fake_redis, "sf")

    def flush(counts: dict[tuple[str, str], int]) -> None:
        pipe = fake_redis.pipeline(transaction=False)
        counters.incr_many(pipe, counts)
        pipe.execute()

    proc = Processor(CAT, store, dlq, sched, stats, flush_counters=flush, clock=lambda: NOW_MS / 1000 + 1.0,
                     after_write=kw.pop("after_write", None), marks=kw.pop("marks", None))
    kw.setdefault("until_idle_s", 3.0)
    kw.setdefault("commit_interval_s", 0.0)
    options = LoopOptions(**{k: kw.pop(k) for k in list(kw) if k in LoopOptions.__dataclass_fields__})
    ing = Ingester(consumer, proc, stats, options, clock=clock, sleep=clock.sleep, **kw)
    consumer.ingester = ing
    return ing, consumer, sched, store, clock


def seed(store: WindowStore, *stations: str) -> None:
    """Give stations the other inputs evaluation_model requires, so ACDC updates make it ready."""
    from parsers.envelopes import parse_message
    from parsers.records import Source

    fee = json.loads(sample("SCHEDULE-CAR-PRICE"))["fee"][0]
    values = {
        "SCHEDULE-STATION-REALTIME-DATA": {"realTimeData": [
            {"stationId": s, "sendTime": "2025-11-19 10:00:00", "hostCode": "h",
             "gunPower": {"gunNo": ["01"], "outputPowerPerGunAvg": [1.0], "outputPowerPerGunMax": [2.0]}}
            for s in stations]},
        "SCHEDULE-CAR-PRICE": {"fee": [dict(fee, stationId=s) for s in stations]},
    }
    msgs = []
    for i, (topic, v) in enumerate(values.items()):
        res = parse_message(CAT.topic(topic), json.dumps(v).encode())
        msgs.append((Source(topic, 0, 1000 + i, NOW_MS - 5000), res.records))
    for i, s in enumerate(stations):
        topic = "SCHEDULE-DEVICE-HOST-DCDC"
        v = {"stationId": s, "hostCode": "h1", "dcWorkStatus": ["01"], "dcdcPower": [1.0]}
        msgs.append((Source(topic, 0, 2000 + i, NOW_MS - 1000), parse_message(CAT.topic(topic),
                     json.dumps(v).encode()).records))
    store.apply(msgs, NOW_MS - 500)


def station_param_for(*stations: str) -> bytes:
    return json.dumps([{"stationId": s, "gunNum": 2, "hostCode": []} for s in stations]).encode()


def test_write_then_schedule_then_commit_last_offset_plus_one(fake_redis: Any) -> None:
    polls = [[record(ACDC, 0, 5, acdc("S1")), record(ACDC, 0, 6, acdc("S2")), record(ACDC, 1, 9, acdc("S1"))]]
    ing, consumer, sched, store, _ = make(fake_redis, polls)
    seed(store, "S1", "S2")
    assert ing.run() == 0
    assert consumer.commits[0] == {(ACDC, 0): 7, (ACDC, 1): 10}
    assert consumer.events.index("schedule") < consumer.events.index("commit")
    assert consumer.closed
    # the windows hold both stations' hosts
    assert fake_redis.hlen("sf:{S1}:d:device_host_acdc") == 1
    assert fake_redis.hlen("sf:{S2}:d:device_host_acdc") == 1
    # S1 was updated twice in the poll: one run per module, in the first message's batch
    # (evaluation_model is ready; the others lack station_param / calendar: not ready)
    assert sorted(sched.calls[0]) == [
        PlannedRun("S1", "evaluation_model", f"evaluation_model:{ACDC}:0:5"),
        PlannedRun("S2", "evaluation_model", f"evaluation_model:{ACDC}:0:6"),
    ]
    c = {k.decode(): int(v) for k, v in fake_redis.hgetall("sf:counters:ingest").items()}
    assert c["messages"] == 3 and c["records"] == 3 and c["polls"] == 1 and c["commits"] == 1


def test_message_with_three_stations_schedules_exactly_three(fake_redis: Any) -> None:
    polls = [[record(PARAM, 0, 0, station_param_for("A", "B", "C"))]]
    ing, consumer, sched, _, _ = make(fake_redis, polls)
    ing.run()
    # station_param alone makes no module ready (each needs more inputs): counted as not ready
    assert sched.calls == []
    c = {k.decode(): int(v) for k, v in fake_redis.hgetall("sf:counters:triggers").items()}
    assert c["load_prediction:not_ready"] == 3
    # once realtime + calendar exist, one message for 3 stations plans runs for exactly 3
    rt = json.dumps({"realTimeData": [
        {"stationId": s, "sendTime": "2025-11-19 10:00:00", "hostCode": "h",
         "gunPower": {"gunNo": ["01"], "outputPowerPerGunAvg": [1.0], "outputPowerPerGunMax": [2.0]}}
        for s in ("A", "B", "C")]}).encode()
    cal = sample("SCHEDULE-ENVIRONMENT-CALENDAR")
    ing2, _, sched2, _, _ = make(fake_redis, [[record("SCHEDULE-ENVIRONMENT-CALENDAR", 0, 0, cal)],
                                              [record("SCHEDULE-STATION-REALTIME-DATA", 0, 0, rt)]],
                                 partitions=[("SCHEDULE-ENVIRONMENT-CALENDAR", 0),
                                             ("SCHEDULE-STATION-REALTIME-DATA", 0)])
    ing2.run()
    lp = [r for call in sched2.calls for r in call if r.module == "load_prediction"]
    assert sorted(r.station for r in lp) == ["A", "B", "C"]
    assert {r.batch_id for r in lp} == {"load_prediction:SCHEDULE-STATION-REALTIME-DATA:0:0"}


def test_bad_records_are_dead_lettered_and_neighbours_processed(fake_redis: Any) -> None:
    bad_dir = SAMPLES / "bad"
    polls = [[record(ACDC, 0, 0, acdc("S1")),
              record(ACDC, 0, 1, (bad_dir / "06_station_id_number.json").read_bytes()),
              record(ACDC, 0, 2, b""),
              record(ACDC, 0, 3, acdc("S2"))]]
    ing, consumer, _, _, _ = make(fake_redis, polls)
    ing.run()
    dl = DeadLetters(fake_redis, "sf")
    entries = dl.list(10)
    assert [(e["offset"], e["reason"]) for e in entries] == [(1, "bad_station_id"), (2, "empty_value")]
    assert dl.counts()[(ACDC, "bad_station_id")] == 1
    assert fake_redis.exists("sf:{S1}:d:device_host_acdc", "sf:{S2}:d:device_host_acdc") == 2
    assert consumer.commits[-1] == {(ACDC, 0): 4}


def test_a_parser_bug_is_dead_lettered_as_internal_error_counted_and_logged(
        fake_redis: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from parsers import envelopes

    def bug(spec: Any, obj: Any) -> Any:
        raise KeyError("gunNo")

    monkeypatch.setitem(envelopes._ENVELOPES, CAT.topic(PARAM).envelope, bug)
    polls = [[record(PARAM, 0, 41, station_param_for("S1")), record(ACDC, 0, 0, acdc("S1"))]]
    ing, consumer, _, _, _ = make(fake_redis, polls)
    with caplog.at_level("ERROR", logger="ingest.process"):
        assert ing.run() == 0  # the partition goes on
    dl = DeadLetters(fake_redis, "sf")
    assert [(e["topic"], e["offset"], e["reason"]) for e in dl.list(10)] == [(PARAM, 41, "internal_error")]
    assert dl.counts()[(PARAM, "internal_error")] == 1
    assert consumer.commits[-1] == {(PARAM, 0): 42, (ACDC, 0): 1}
    [rec] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert f"topic {PARAM} partition 0 offset 41" in rec.getMessage() and "KeyError" in rec.getMessage()
    assert rec.exc_info and rec.exc_info[0] is KeyError  # the traceback of the bug


def test_records_without_timestamp_are_stamped_and_counted(fake_redis: Any) -> None:
    polls = [[record(ACDC, 0, 0, acdc("S1"), ts=-1)]]
    ing, _, _, store, _ = make(fake_redis, polls)
    ing.run()
    assert int(fake_redis.hget("sf:counters:ingest", "stamped")) == 1
    item = store.read_station("S1", ["evaluation_model"], now_ms=NOW_MS + 1000)["device_host_acdc"]
    assert [it["ts"] for it in item.values()] == [NOW_MS + 1000]


def test_store_outage_pauses_retries_and_commits_only_after_success(fake_redis: Any) -> None:
    polls = [[record(ACDC, 0, 0, acdc("S1")), record(ACDC, 1, 0, acdc("S2"))]]
    ing, consumer, sched, store, clock = make(fake_redis, polls)
    seed(store, "S1", "S2")
    store.fail = [redis.ConnectionError("down"), redis.ResponseError("BUSY script"), redis.TimeoutError("t")]
    sched.fail = [redis.ConnectionError("queue down")]
    ing.run()
    assert store.applies == 2  # the seed, then three failed attempts and one success
    assert len(sched.calls) == 1
    assert consumer.commits == [{(ACDC, 0): 1, (ACDC, 1): 1}]
    assert consumer.events[0].startswith("pause") and any(e.startswith("resume") for e in consumer.events)
    assert consumer.events.index("commit") > max(i for i, e in enumerate(consumer.events) if e.startswith("resume"))
    assert DeadLetters(fake_redis, "sf").count() == 0  # an outage is never bad input
    assert int(fake_redis.hget("sf:counters:ingest", "store_retries")) == 4


def test_stop_during_outage_abandons_without_commit(fake_redis: Any) -> None:
    polls = [[record(ACDC, 0, 7, acdc("S1"))]]
    ing, consumer, sched, store, _ = make(fake_redis, polls)
    store.fail = [redis.ConnectionError("down")]

    def stop_then_fail(*a: Any) -> None:
        ing.stop()
        raise redis.ConnectionError("still down")

    store.apply = stop_then_fail  # type: ignore[method-assign]
    assert ing.run() == 0
    assert consumer.commits == []
    assert consumer.seeks == [(TopicPartition(ACDC, 0), 7)]  # given back to Kafka
    assert consumer.closed


def test_unexpected_error_propagates(fake_redis: Any) -> None:
    ing, consumer, sched, store, _ = make(fake_redis, [[record(ACDC, 0, 0, acdc("S1"))]])
    seed(store, "S1")
    sched.fail = [RuntimeError("bug")]
    with pytest.raises(RuntimeError, match="bug"):
        ing.run()
    assert consumer.commits == [] and consumer.closed


def test_revoke_commits_finished_work_before_release(fake_redis: Any) -> None:
    def revoke_partition_1(c: FakeConsumer) -> list[Any]:
        c.revoke([(ACDC, 1)])
        return [record(ACDC, 0, 3, acdc("S3"))]

    polls = [[record(ACDC, 0, 2, acdc("S1")), record(ACDC, 1, 4, acdc("S2"))], revoke_partition_1]
    ing, consumer, *_ = make(fake_redis, polls, commit_interval_s=60.0)
    ing.run()
    # the revoke committed partition 1's finished work before releasing it
    assert consumer.commits[0] == {(ACDC, 1): 5}
    assert consumer.commits[-1] == {(ACDC, 0): 4}


def test_revoke_during_outage_drops_unwritten_records_of_revoked_partitions(fake_redis: Any) -> None:
    polls = [[record(ACDC, 0, 0, acdc("S1")), record(ACDC, 1, 0, acdc("S2"))]]
    ing, consumer, sched, store, clock = make(fake_redis, polls)
    attempts = []

    def fail_and_revoke(messages: Any, now_ms: int) -> Any:
        attempts.append(len(messages))
        if len(attempts) == 1:
            raise redis.ConnectionError("down")
        if len(attempts) == 2:  # called from the revoke callback: still down
            raise redis.ConnectionError("down")
        return WindowStore.apply(store, messages, now_ms)

    store.apply = fail_and_revoke  # type: ignore[method-assign]
    consumer.polls.insert(1, lambda c: (c.revoke([(ACDC, 1)]), [])[1])
    ing.run()
    assert attempts == [2, 2, 1]  # after the revoke only partition 0's record is retried
    assert consumer.commits == [{(ACDC, 0): 1}]
    assert not fake_redis.exists("sf:{S2}:d:device_host_acdc")  # left to its new owner


def test_backpressure_pauses_above_high_water_and_resumes_below_low(fake_redis: Any) -> None:
    depths = iter([50, 150, 120, 70, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10])
    polls = [[record(ACDC, 0, i, acdc("S1"))] for i in range(6)]
    ing, consumer, *_ = make(fake_redis, polls, queue_depth=lambda: next(depths, 10),
                             gate=QueueGate(100, 80), depth_interval_s=0.0)
    ing.run()
    pauses = [e for e in consumer.events if e.startswith("pause")]
    resumes = [e for e in consumer.events if e.startswith("resume")]
    assert len(pauses) == 1 and len(resumes) == 1
    assert int(fake_redis.hget("sf:counters:ingest", "pauses")) == 1
    assert int(fake_redis.hget("sf:counters:ingest", "resumes")) == 1
    assert consumer.commits[-1] == {(ACDC, 0): 6}  # nothing lost while paused


def test_until_idle_waits_for_quiet_after_last_commit(fake_redis: Any) -> None:
    polls = [[record(ACDC, 0, 0, acdc("S1"))], [], [], [record(ACDC, 0, 1, acdc("S1"))]]
    ing, consumer, _, _, clock = make(fake_redis, polls, until_idle_s=2.0, poll_timeout_ms=500)
    start = clock.t
    ing.run()
    assert consumer.commits[-1] == {(ACDC, 0): 2}
    assert clock.t - start >= 2.0


def test_after_write_callback_runs_after_each_write_before_the_commit(fake_redis: Any) -> None:
    polls = [[record(ACDC, 0, 0, acdc("S1"))], [record(ACDC, 0, 1, acdc("S1"))]]
    seen: list[tuple[int, dict[Any, int]]] = []
    ing, consumer, *_ = make(fake_redis, polls,
                             after_write=lambda n: seen.append((n, dict(consumer.commits[-1]) if consumer.commits else {})))
    ing.run()
    assert [n for n, _ in seen] == [1, 2]
    assert seen[1][1] != consumer.commits[-1]  # the second write ran before its offsets were committed


def test_collector_paused_during_a_poll_running_while_waiting_and_after(fake_redis: Any) -> None:
    import gc

    polls = [[record(ACDC, 0, 0, acdc("S1"))], [record(ACDC, 0, 1, acdc("S1"))]]
    ing, consumer, sched, store, _ = make(fake_redis, polls)
    seed(store, "S1")
    seen: list[tuple[str, bool]] = []
    inner_apply, inner_wait = store.apply, ing._poll_paused

    def apply(messages: Any, now_ms: int) -> Any:
        seen.append(("apply", gc.isenabled()))
        if len(seen) == 1:
            raise redis.ConnectionError("down")  # one outage: the wait runs with the collector on
        return inner_apply(messages, now_ms)

    def wait(seconds: float) -> None:
        seen.append(("wait", gc.isenabled()))
        inner_wait(seconds)

    store.apply = apply  # type: ignore[method-assign]
    ing._poll_paused = wait  # type: ignore[method-assign]
    assert gc.isenabled()
    assert ing.run() == 0
    assert seen == [("apply", False), ("wait", True), ("apply", False), ("apply", False)]
    assert gc.isenabled()
    assert consumer.commits and consumer.commits[-1] == {(ACDC, 0): 2}

    sched.fail = [RuntimeError("bug")]  # an error leaving the poll turns the collector back on
    ing2, *_ = make(fake_redis, [[record(ACDC, 0, 2, acdc("S1"))]])
    ing2.processor.schedule = sched
    with pytest.raises(RuntimeError, match="bug"):
        ing2.run()
    assert gc.isenabled()


def test_commit_rejected_by_a_rebalance_keeps_owned_offsets_for_the_next_commit(fake_redis: Any) -> None:
    """A rejected commit must not forget the partitions we keep: the written work is committed
    after the rejoin, not only once newer records arrive. Partitions no longer ours are dropped."""
    from kafka.errors import RebalanceInProgressError

    ing, consumer, _, _, _ = make(fake_redis, [[record(ACDC, 0, 2, acdc("S1")), record(ACDC, 1, 4, acdc("S2"))]])
    real_commit = consumer.commit
    rejected: list[int] = []

    def reject_once(offsets: dict[TopicPartition, Any]) -> None:
        if not rejected:
            rejected.append(1)
            consumer.assigned.discard(TopicPartition(ACDC, 1))  # the rebalance moves partition 1 away
            raise RebalanceInProgressError("rebalancing")
        real_commit(offsets)

    consumer.commit = reject_once  # type: ignore[method-assign]
    assert ing.run() == 0
    assert rejected == [1]
    # partition 0 (still ours) committed after the rejected attempt; partition 1 left to its owner
    assert consumer.commits == [{(ACDC, 0): 3}]


def test_revoke_on_the_clients_io_thread_commits_without_blocking(fake_redis: Any) -> None:
    """kafka-python 3 calls rebalance listeners on its IO thread, where a blocking commit()
    raises; the revoke then sends the commit asynchronously."""
    import threading

    sent: list[dict[tuple[str, int], int]] = []

    def revoke_from_io_thread(c: FakeConsumer) -> list[Any]:
        loop_commit = c.commit

        def blocking_commit(offsets: Any) -> None:
            raise RuntimeError("Cannot block on net.run() from the IO thread itself")

        def commit_async(offsets: dict[TopicPartition, Any], callback: Any = None) -> None:
            sent.append({(tp.topic, tp.partition): om.offset for tp, om in offsets.items()})

        c.commit, c.commit_async = blocking_commit, commit_async  # type: ignore[method-assign,attr-defined]
        t = threading.Thread(target=c.revoke, args=([(ACDC, 1)],))
        t.start()
        t.join()
        c.commit = loop_commit  # type: ignore[method-assign]
        return []

    polls = [[record(ACDC, 0, 2, acdc("S1")), record(ACDC, 1, 4, acdc("S2"))], revoke_from_io_thread]
    ing, consumer, *_ = make(fake_redis, polls, commit_interval_s=3600.0)
    assert ing.run() == 0
    assert sent == [{(ACDC, 1): 5}]  # the revoked partition, sent from the listener's thread
    assert consumer.commits == [{(ACDC, 0): 3}]  # the rest at the end, on the loop thread


def test_replayed_messages_schedule_nothing_even_when_readiness_changed(fake_redis: Any) -> None:
    """A new group re-reads a message whose triggers were scheduled (or found not ready) by the
    first delivery: with replay marks nothing is planned again, whatever readiness says now."""
    from store.marks import ScheduleMarks

    polls = [[record(ACDC, 0, 5, acdc("S1")), record(ACDC, 0, 6, acdc("S2"))]]
    ing, _, sched, store, _ = make(fake_redis, polls, marks=ScheduleMarks(fake_redis))
    seed(store, "S1")  # S2 is not ready on the first delivery
    ing.run()
    assert [r.station for call in sched.calls for r in call] == ["S1"]
    seed(store, "S2")  # ... and would be now
    replay = [[record(ACDC, 0, 5, acdc("S1")), record(ACDC, 0, 6, acdc("S2")), record(ACDC, 0, 7, acdc("S2"))]]
    ing2, _, sched2, _, _ = make(fake_redis, replay, marks=ScheduleMarks(fake_redis))
    ing2.run()
    assert sched2.calls == [[PlannedRun("S2", "evaluation_model", f"evaluation_model:{ACDC}:0:7")]]
    c = {k.decode(): int(v) for k, v in fake_redis.hgetall("sf:counters:ingest").items()}
    assert c["triggers_replayed"] == 2


def test_a_failed_schedule_leaves_the_marks_behind_so_the_retry_schedules(fake_redis: Any) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from store.marks import ScheduleMarks

    polls = [[record(ACDC, 0, 5, acdc("S1"))]]
    ing, _, sched, store, _ = make(fake_redis, polls, marks=ScheduleMarks(fake_redis))
    seed(store, "S1")
    sched.fail.append(RedisConnectionError("queue down"))  # after the window write
    ing.run()
    assert sched.calls == [[PlannedRun("S1", "evaluation_model", f"evaluation_model:{ACDC}:0:5")]]
    assert ScheduleMarks(fake_redis).read("S1") == {f"{ACDC}:0": 5}
