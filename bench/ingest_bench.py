"""Ingester throughput against a bare kafka-python consumer, and end-to-end lag under load.

    python -m bench.ingest_bench [--stations 200] [--messages 20000] [--partitions 4]
                                 [--rate 400] [--seconds 15]

One private broker (Tansu, or $STATIONFLOW_KAFKA) and one private redis-server, one run:

1. produce `--messages` realistic messages (all 13 input topics, `stationflow.traffic`);
2. bare: a KafkaConsumer with exactly the ingester's client settings (settings.kafka
   .consumer_config(), manual commit) polls them all and does nothing else;
3. ingester: one `stationflow ingest` (in process) consumes the same records: parse, window
   writes, dead letters, trigger planning, scheduling (batches + RQ enqueue), commits.
   Both rates are counted from the first record received, so group joins are excluded;
   the ingester's wall time is split per stage (µs per input record);
4. lag: a producer sends fresh traffic at `--rate` msg/s for `--seconds` while the ingester
   runs; lag = time the poll's work finished (before its commit) minus the record timestamp.

No RQ worker drains the queue here, so after the first trigger a station's runs stay pending
and later triggers are absorbed (cheaper than a steady state where workers keep up).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from parsers.catalogue import Catalogue
from stationflow.local import start_broker, start_redis
from stationflow.runtime import build_ingester
from stationflow.settings import Settings
from stationflow.traffic import Traffic


def _catalogue(suffix: str) -> Catalogue:
    base = Catalogue.build()
    return Catalogue.build(topic_names={t.alias: f"{t.topic}-{suffix}" for t in base.topics})


def _settings(cat: Catalogue, bootstrap: str, redis_url: str, group: str,
              consumer: dict[str, Any] | None = None) -> Settings:
    return Settings.from_dict({
        "redis": {"url": redis_url},
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group,
                  "consumer": {"session_timeout_ms": 10000, "heartbeat_interval_ms": 1000, **(consumer or {})}},
        "topics": {t.alias: {"topic": t.topic} for t in cat.topics},
        "queue": {"high_water": 10**9, "low_water": 10**9 - 1},
        "ingest": {"summary_interval_s": 0},
    })


def _produce(bootstrap: str, msgs: list[Any], rate: float | None = None, seconds: float | None = None,
             traffic: Traffic | None = None) -> int:
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=64 << 20)
    sent = 0
    try:
        if rate is None:
            for m in msgs:
                p.send(m.topic, value=m.value, timestamp_ms=m.timestamp_ms)
                sent += 1
        else:
            assert traffic is not None and seconds is not None
            start = time.monotonic()
            it = traffic.messages()
            while (elapsed := time.monotonic() - start) < seconds:
                due = int(elapsed * rate) - sent
                for _ in range(due):
                    m = next(it)
                    p.send(m.topic, value=m.value)  # broker timestamp = now: lag is real
                    sent += 1
                time.sleep(0.005)
        p.flush(60)
    finally:
        p.close(timeout=10)
    return sent


def bare_rate(settings: Settings, topics: list[str], n: int, expect_bytes: int | None = None,
              group: str | None = None, commit: bool = False) -> float:
    cfg = settings.kafka.consumer_config()
    cfg["group_id"] = group or f"bare-{uuid.uuid4().hex[:8]}"
    c = KafkaConsumer(**cfg)
    c.subscribe(topics)
    got, first, size = 0, None, 0
    deadline = time.monotonic() + 300
    try:
        while got < n and time.monotonic() < deadline:
            batch = c.poll(timeout_ms=500, max_records=cfg.get("max_poll_records", 2000))
            if batch and first is None:
                first = time.perf_counter()
            for recs in batch.values():
                got += len(recs)
                for r in recs:  # touch every value, as the ingester must
                    size += len(r.value)
        end = time.perf_counter()
        if commit:
            c.commit()
    finally:
        c.close(autocommit=False)
    if got < n or first is None:
        raise RuntimeError(f"bare consumer got {got} of {n} records")
    if expect_bytes is not None and size != expect_bytes:
        raise RuntimeError(f"bare consumer got {size} value bytes, {expect_bytes} were produced")
    return got / (end - first)


class Stages:
    """Wall time per ingester stage (poll, parse, window write, dead letters, planning,
    scheduling, commit), wrapped around the live objects: the code under test is unchanged."""

    NAMES = ("poll", "parse", "write", "dlq", "plan", "schedule", "commit")

    def __init__(self, svc: Any, probe: Probe) -> None:
        self.t = dict.fromkeys(self.NAMES, 0.0)
        ing = svc.ingester
        proc = ing.processor
        self._wrap(ing.consumer, "poll", "poll")
        poll = ing.consumer.poll

        def first_poll(*a: Any, **kw: Any) -> Any:
            out = poll(*a, **kw)
            if probe.first is None and out:  # the clock starts when the first record is in hand
                probe.first = time.perf_counter()
                self.reset()
            return out

        ing.consumer.poll = first_poll
        self._wrap(ing.consumer, "commit", "commit")
        self._wrap(proc, "prepare", "parse")
        self._wrap(proc.store, "apply", "write")
        self._wrap(proc.dead_letters, "add", "dlq")
        self._wrap(proc, "_plan", "plan")
        self._wrap(proc, "schedule", "schedule")

    def _wrap(self, obj: Any, attr: str, name: str) -> None:
        inner = getattr(obj, attr)
        t = self.t

        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                t[name] += time.perf_counter() - t0

        setattr(obj, attr, timed)

    def reset(self) -> None:
        self.t.update(dict.fromkeys(self.NAMES, 0.0))

    def report(self, n: int, total_s: float) -> str:
        parts = [f"{k} {v / n * 1e6:.1f}" for k, v in self.t.items()]
        rest = total_s - sum(self.t.values())
        return "  µs/record: " + ", ".join(parts) + f", other {rest / n * 1e6:.1f} (total {total_s / n * 1e6:.1f})"


class Probe:
    """Wraps the processor: first-record time, completion time, per-record lag."""

    def __init__(self, svc: Any) -> None:
        self.first: float | None = None
        self.lags_ms: list[float] = []
        self.done = 0
        proc = svc.ingester.processor
        inner = proc.execute

        def execute(fl: Any) -> None:
            inner(fl)
            now_ms = time.time() * 1000
            self.lags_ms.extend(now_ms - r.timestamp for r in fl.records)
            self.done += len(fl.records)
            self.last = time.perf_counter()

        proc.execute = execute


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stations", type=int, default=200)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rate", type=float, default=400.0, help="msg/s of the lag phase")
    ap.add_argument("--seconds", type=float, default=15.0, help="duration of the lag phase")
    ap.add_argument("--profile", metavar="FILE", help="cProfile the ingester thread into FILE (pstats)")
    ap.add_argument("--skip", type=int, default=0, metavar="N",
                    help="drop the first N simulated messages (the start-up burst: 168-hour realtime "
                         "history, station params, prices, calendar) to measure the steady mix")
    ap.add_argument("--warm", action="store_true",
                    help="with --skip: produce and ingest the skipped messages first (unmeasured, "
                         "both consumers), so the steady mix meets filled windows as in production")
    ap.add_argument("--max-poll-records", type=int, default=None,
                    help="kafka.consumer.max_poll_records for both consumers (default: the settings')")
    ap.add_argument("--max-partition-fetch-bytes", type=int, default=None,
                    help="kafka.consumer.max_partition_fetch_bytes for both consumers")
    a = ap.parse_args()

    external = os.environ.get("STATIONFLOW_KAFKA")
    broker = None if external else start_broker()
    bootstrap = external or broker.bootstrap  # type: ignore[union-attr]
    redis = start_redis()
    try:
        suffix = uuid.uuid4().hex[:8]
        cat = _catalogue(suffix)
        topics = [t.topic for t in cat.input_topics]
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(t, a.partitions, 1) for t in topics])
        admin.close()
        # the measured messages start 5 s before "now": device windows hide records older than
        # their TTL (60 s), so older timestamps would leave every device-fed module not ready
        offset = Traffic(stations=a.stations, seed=1, catalogue=cat, start_ms=0).take(a.skip + 1)[-1].timestamp_ms
        traffic = Traffic(stations=a.stations, seed=1, catalogue=cat,
                          start_ms=int(time.time() * 1000) - offset - 5000)
        warm = traffic.take(a.skip) if a.skip else []
        msgs = traffic.take(a.messages)
        size = sum(len(m.value) for m in msgs)
        mix: dict[str, int] = {}
        for m in msgs:
            alias = cat.by_topic[m.topic].alias
            mix[alias] = mix.get(alias, 0) + 1
        consumer = {k: v for k, v in (("max_poll_records", a.max_poll_records),
                                      ("max_partition_fetch_bytes", a.max_partition_fetch_bytes)) if v}
        settings = _settings(cat, bootstrap, redis.url, f"ing-{suffix}", consumer)
        bare_group = f"bare-{suffix}"
        if a.warm and warm:
            _produce(bootstrap, warm)
            bare_rate(settings, topics, len(warm), group=bare_group, commit=True)
            w = build_ingester(settings, until_idle_s=1.0)
            w.ingester.run()
            print(f"warm-up: {len(warm)} messages ingested and consumed bare first (not measured); "
                  f"{w.stats.total('ingest', 'runs_planned')} runs pending")
        t0 = time.perf_counter()
        _produce(bootstrap, msgs)
        print(f"produced {len(msgs)} messages ({size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s; mix: "
              + ", ".join(f"{k}={v}" for k, v in sorted(mix.items(), key=lambda kv: -kv[1])))

        cfg = settings.kafka.consumer_config()
        print(f"client settings of both consumers: max_poll_records {cfg.get('max_poll_records')}, "
              f"max_partition_fetch_bytes {cfg.get('max_partition_fetch_bytes')}, "
              f"fetch_max_bytes {cfg.get('fetch_max_bytes')}, check_crcs {cfg.get('check_crcs', True)}")
        bare = bare_rate(settings, topics, len(msgs), expect_bytes=size, group=bare_group)

        svc = build_ingester(settings)
        probe = Probe(svc)
        stages = Stages(svc, probe)
        target_fn = svc.ingester.run
        prof = None
        if a.profile:
            import cProfile

            prof = cProfile.Profile()
            target_fn = lambda: prof.runcall(svc.ingester.run)  # noqa: E731
        th = threading.Thread(target=target_fn, daemon=True)
        th.start()
        deadline = time.monotonic() + 600
        while probe.done < len(msgs) and time.monotonic() < deadline:
            time.sleep(0.05)
        ing = probe.done / (probe.last - probe.first)  # type: ignore[operator]
        stage_text = stages.report(probe.done, probe.last - probe.first)  # type: ignore[operator]
        st = svc.stats
        print(f"\nthroughput, {len(msgs)} records, {a.partitions} partitions/topic, {a.stations} stations:")
        print(f"  bare kafka-python consume : {bare:10.0f} records/s")
        print(f"  stationflow ingest        : {ing:10.0f} records/s   ({ing / bare:.2f} x bare)")
        print(f"  fanned-out records {st.total('ingest', 'records')}, dead letters {st.total('ingest', 'dead_letters')}, "
              f"runs planned {st.total('ingest', 'runs_planned')}, triggers fired/absorbed/not ready "
              f"{st.total('ingest', 'triggers_fired')}/{st.total('ingest', 'triggers_absorbed')}/"
              f"{st.total('ingest', 'triggers_not_ready')}, polls {st.total('ingest', 'polls')}")
        print(stage_text + "  (poll counts from the first poll; per input record)")

        probe.lags_ms.clear()
        sent = _produce(bootstrap, [], rate=a.rate, seconds=a.seconds, traffic=traffic)
        deadline = time.monotonic() + 60
        target = len(msgs) + sent
        while probe.done < target and time.monotonic() < deadline:
            time.sleep(0.05)
        svc.ingester.stop()
        th.join(timeout=30)
        if prof is not None:
            prof.dump_stats(a.profile)
        lags = sorted(probe.lags_ms)
        q = statistics.quantiles(lags, n=100) if len(lags) > 1 else lags * 99
        print(f"\nend-to-end lag at {a.rate:.0f} msg/s for {a.seconds:.0f} s ({len(lags)} records; produce -> "
              f"window written + runs scheduled):")
        print(f"  p50 {q[49]:.0f} ms   p95 {q[94]:.0f} ms   p99 {q[98]:.0f} ms   max {lags[-1]:.0f} ms")
    finally:
        redis.stop()
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
