"""The whole system as separate processes: ingesters and workers against one broker and Redis.

    python -m bench.e2e_bench [--stations 1000] [--rate 2000] [--seconds 60] [--steps 1000,2000,3000]

Used by `stationflow bench` (bench/report.py) for three figures:
- ingest throughput of one and two ingester *processes* (a thread would share the GIL);
- station jobs/s of a pool of two worker processes, next to bare RQ with the same worker class;
- end to end: `stationflow.traffic` is produced at a paced rate while one ingester and two
  workers (real reference algorithms, Kafka upload) run; latency = the batch envelope's
  record timestamp on its MODULE-OUTPUT-* topic (set by the uploader's producer) minus the
  timestamp of the source message named by the batch id (set by our producer at send).
  Then the rate is stepped up; a step is sustainable while the producer keeps its rate, the
  ingester's lag stays under 2 s and latency does not grow within the step.

Child processes are spawned (not forked) and told the settings as a plain dict; every one
is stopped by its pid in a `finally`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.e2e_procs import Ingesters, rss_bytes, start_workers, station_jobs_done, stop_workers
from parsers.batches import parse_batch_id

SEED = 3


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); nan for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))]


def settings_dict(cat: Any, bootstrap: str, redis_url: str, group: str, *, high_water: int | None = None,
                  batch_timeout_s: float | None = None, min_interval_s: float | None = None) -> dict[str, Any]:
    """Settings as a plain dict (children are spawned: they rebuild Settings from it)."""
    d: dict[str, Any] = {
        "redis": {"url": redis_url},
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group,
                  "consumer": {"session_timeout_ms": 10000, "heartbeat_interval_ms": 1000}},
        "topics": {t.alias: {"topic": t.topic} for t in cat.topics},
        "ingest": {"summary_interval_s": 0, "commit_interval_s": 0.5},
    }
    if high_water is not None:
        d["queue"] = {"high_water": high_water, "low_water": high_water - 1}
    if batch_timeout_s is not None:
        d["batch"] = {"timeout_s": batch_timeout_s}
    if min_interval_s is not None:  # every module (None: the catalogue's defaults)
        d["modules"] = {m: {"min_interval_s": min_interval_s} for m in cat.by_module}
    return d


def machine_busy_s() -> float:
    """CPU seconds every core of the machine spent busy so far (Linux /proc/stat: all but idle
    and iowait), whoever spent them: the bench's processes and anything else running."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, every thread (Linux /proc), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


# ---- end to end -----------------------------------------------------------------------------

class Outputs(threading.Thread):
    """Consumes every MODULE-OUTPUT-* topic: (batch id, envelope record timestamp, results)."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        super().__init__(daemon=True, name="bench-outputs")
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=f"bench-out-{uuid.uuid4().hex[:8]}",
                                      auto_offset_reset="earliest", enable_auto_commit=False,
                                      fetch_max_wait_ms=50)
        self.consumer.subscribe(topics)
        deadline = time.monotonic() + 60
        while not self.consumer.assignment() and time.monotonic() < deadline:
            self.consumer.poll(timeout_ms=100)  # join now: the first phase's envelopes must count
        self.seen: list[tuple[str, int, int]] = []
        self._stop_ev = threading.Event()

    def run(self) -> None:
        import orjson

        while not self._stop_ev.is_set():
            for recs in self.consumer.poll(timeout_ms=200).values():
                for rec in recs:
                    env = orjson.loads(rec.value)
                    self.seen.append((env["batch_id"], rec.timestamp, int(env.get("stations_count", 0))))

    def stop(self) -> None:
        self._stop_ev.set()
        self.join(10)
        self.consumer.close(autocommit=False)


class Sender:
    """Paced producer of `Traffic`: remembers each message's send timestamp by coordinates."""

    def __init__(self, bootstrap: str, traffic: Any) -> None:
        from kafka import KafkaProducer

        self.p = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5, max_request_size=64 << 20)
        self.it: Iterator[Any] = traffic.messages()
        self.sim_ms = traffic.start_ms
        self.sent: dict[tuple[str, int, int], int] = {}
        self.count = 0
        self._pending: Any = None

    def _send(self, m: Any) -> None:
        def ok(md: Any) -> None:
            self.sent[(md.topic, md.partition, md.offset)] = md.timestamp

        self.p.send(m.topic, value=m.value).add_callback(ok)
        self.count += 1

    def burst_until(self, sim_ms: int) -> int:
        """Send every message stamped up to `sim_ms`, unpaced (the initial state)."""
        n = 0
        for m in self.it:
            if m.timestamp_ms > sim_ms:
                self._pending = m
                break
            self._send(m)
            n += 1
        self.p.flush(120)
        return n

    def paced(self, speed: float, seconds: float) -> tuple[int, float]:
        """Send simulated time at `speed` x real time for `seconds`; (messages, wall s)."""
        from stationflow.traffic import SimClock

        clock = SimClock(self.sim_ms, speed)
        n, t0 = 0, time.monotonic()
        self.behind_s = 0.0  # how late the producer sent a message, at worst
        while True:
            m = self._pending or next(self.it)
            self._pending = None
            elapsed = time.monotonic() - t0
            if elapsed >= seconds:
                self._pending = m
                break
            wait = (m.timestamp_ms - clock.start_ms) / 1000 / speed - elapsed
            if wait > 0.002:
                time.sleep(min(wait, seconds - elapsed))
                if time.monotonic() - t0 >= seconds:
                    self._pending = m
                    break
            else:
                self.behind_s = max(self.behind_s, -wait)
            self._send(m)
            self.sim_ms = max(self.sim_ms, m.timestamp_ms)
            n += 1
        self.p.flush(60)
        return n, time.monotonic() - t0

    def close(self) -> None:
        self.p.close(timeout=10)


def natural_rate(stations: int, catalogue: Any, seed: int, sim_s: float = 120) -> float:
    """Messages per simulated second of a fleet, after its initial state (rates vary as
    charging sessions start and end: the achieved rate of a phase is reported beside it)."""
    from stationflow.traffic import Traffic

    tr = Traffic(stations=stations, seed=seed, catalogue=catalogue, start_ms=1_763_524_800_000)
    n = 0
    for m in tr.messages():
        if m.timestamp_ms - tr.start_ms > sim_s * 1000:
            break
        if m.timestamp_ms > tr.start_ms:
            n += 1
    return n / sim_s


@dataclass
class Phase:
    name: str
    target: float
    t0_ms: int
    t1_ms: int = 0
    sent: int = 0
    wall_s: float = 0.0
    producer_behind_s: float = 0.0
    stations: int = 0
    jobs_done: int = 0
    ingest_lag_ms: list[float] = field(default_factory=list)
    queue_depth: list[int] = field(default_factory=list)
    jobs_settled: int = 0  # jobs of the phase once its backlog drained
    station_jobs_done: int = 0  # stations run by those jobs (a group job runs several)
    station_jobs_settled: int = 0
    worker_cpu_s: float = 0.0  # CPU time of the worker processes over the same span
    cores: dict[str, float] = field(default_factory=dict)  # CPU cores busy while sending, by process
    counters: dict[str, int] = field(default_factory=dict)  # trigger counters moved in the phase


def _latencies(sender: Sender, outputs: Outputs, phase: Phase, deferred: set[str] | None = None,
               want_deferred: bool | None = None) -> list[tuple[int, float, str]]:
    """(source send ms, latency ms, source topic) of every envelope whose source message was
    sent in `phase`; with `want_deferred`, only the batches that are (True) or are not (False)
    in `deferred` (a batch waiting for a run the rate limit deferred)."""
    out = []
    for batch_id, ts, _n in list(outputs.seen):
        if want_deferred is not None and (batch_id in (deferred or ())) != want_deferred:
            continue
        try:
            ref = parse_batch_id(batch_id)
            sent = sender.sent.get((ref.topic, ref.partition, ref.offset))
        except ValueError:
            continue
        if sent is not None and phase.t0_ms <= sent <= phase.t1_ms:
            out.append((sent, float(ts - sent), ref.topic))
    return out


def deferred_batches(r: Any, batch_ids: list[str], timeouts_ms: dict[str, int]) -> set[str]:
    """Batches whose deadline was extended past their module's batch timeout: they expect a
    station whose run the rate limit deferred (their extra wait is the interval, by design)."""
    pipe = r.pipeline(transaction=False)
    for b in batch_ids:
        pipe.hmget(f"sf:batch:{b}", "module", "created", "deadline")
    out = set()
    for b, (mod, created, deadline) in zip(batch_ids, pipe.execute(), strict=True):
        if mod is not None and created is not None and deadline is not None:
            if int(deadline) - int(created) > timeouts_ms.get(mod.decode(), 0) + 5:
                out.add(b)
    return out


def summarise_phase(sender: Sender, outputs: Outputs, phase: Phase, windows: int = 1,
                    deferred: set[str] | None = None) -> dict[str, Any]:
    """Percentiles of the phase; with `windows` > 1 also per equal part of it (median, min, max
    over the parts: the spread shows how steady the phase was). The headline percentiles are
    of the batches not deferred by the rate limit; deferred ones are reported apart."""
    deferred = deferred or set()
    lat = sorted(_latencies(sender, outputs, phase, deferred, False))
    dlat = [v for _, v, _ in _latencies(sender, outputs, phase, deferred, True)]
    vals = [v for _, v, _ in lat]
    half = len(lat) // 2
    first, second = [v for _, v, _ in lat[:half]], [v for _, v, _ in lat[half:]]
    by_source: dict[str, list[float]] = {}
    for _, v, topic in lat:
        by_source.setdefault(topic.rsplit("-", 1)[0], []).append(v)  # drop the run's topic suffix
    achieved = phase.sent / phase.wall_s if phase.wall_s else 0.0
    lag_end = phase.ingest_lag_ms[-1] if phase.ingest_lag_ms else float("nan")
    growing = bool(second and first and pct(second, 50) > 1.5 * pct(first, 50) + 500)
    queue_end = phase.queue_depth[-1] if phase.queue_depth else 0
    jobs_s = phase.jobs_done / phase.wall_s if phase.wall_s else 0.0
    backlog_s = queue_end / jobs_s if jobs_s else (0.0 if queue_end == 0 else None)  # None: nothing ran
    saturated = backlog_s is None or backlog_s > 1.0  # coalescing caps the queue: a backlog is waiting time
    # some output came (deferred batches count: a short phase can hold nothing else)
    sustainable = (bool(vals or dlat) and phase.producer_behind_s <= 1.0 and lag_end <= 2000 and not growing
                   and not saturated)
    out = {
        "phase": phase.name, "target_records_s": phase.target, "achieved_records_s": achieved,
        "producer_behind_s": phase.producer_behind_s, "latency_growing": growing,
        "sent": phase.sent, "seconds": phase.wall_s, "envelopes": len(vals),
        "p50_ms": pct(vals, 50), "p95_ms": pct(vals, 95), "p99_ms": pct(vals, 99),
        "max_ms": max(vals) if vals else float("nan"),
        "p50_first_half_ms": pct(first, 50), "p50_second_half_ms": pct(second, 50),
        "ingest_lag_end_ms": lag_end, "ingest_lag_max_ms": max(phase.ingest_lag_ms, default=float("nan")),
        "queue_depth_max": max(phase.queue_depth, default=0), "queue_depth_end": queue_end,
        "workers_saturated": saturated, "worker_jobs_s": jobs_s, "queue_backlog_s": backlog_s,
        "sustainable": sustainable,
        "deferred_envelopes": len(dlat), "deferred_p50_ms": pct(dlat, 50), "deferred_p99_ms": pct(dlat, 99),
        "worker_cpu_ms_per_job": (phase.worker_cpu_s * 1000 / phase.jobs_settled if phase.jobs_settled
                                  else float("nan")),
        "station_jobs_s": phase.station_jobs_done / phase.wall_s if phase.wall_s else 0.0,
        "worker_cpu_ms_per_station_job": (phase.worker_cpu_s * 1000 / phase.station_jobs_settled
                                          if phase.station_jobs_settled else float("nan")),
        "runs": dict(phase.counters),
        "cpu_cores": dict(phase.cores),
        "by_source_topic": {t: {"envelopes": len(v), "p50_ms": pct(v, 50), "p95_ms": pct(v, 95)}
                            for t, v in sorted(by_source.items())},
    }
    rest = [v for _, v, t in lat if "CAR-ORDER" not in t]
    out.update(p50_no_orders_ms=pct(rest, 50), p95_no_orders_ms=pct(rest, 95), p99_no_orders_ms=pct(rest, 99))
    every = _latencies(sender, outputs, phase)  # deferred batches included: steadiness of the whole phase
    if windows > 1 and every:
        span = (phase.t1_ms - phase.t0_ms) / windows
        parts: list[list[float]] = [[] for _ in range(windows)]
        for sent, v, _ in every:
            parts[min(windows - 1, int((sent - phase.t0_ms) / span))].append(v)
        parts = [x for x in parts if x]
        out["windows"] = {f"p{q}_ms": _spread([pct(x, q) for x in parts]) for q in (50, 95, 99)}
    return out


def _spread(v: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": len(v), "values": v}


def run_e2e(bootstrap: str, redis_url: str, *, stations: int, rate: float, seconds: float,
            steps: list[float], step_seconds: float, workers: int = 2, partitions: int = 4,
            log: Any = print, windows: int = 3, min_interval_s: float | None = None) -> dict[str, Any]:
    """Warm up (initial state of the fleet), a steady phase at `rate`, then the stepped rates.
    `min_interval_s` set: every module's rate limit (0 = none); None: the catalogue defaults."""
    import redis
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    from bench.ingest_bench import _catalogue
    from stationflow.traffic import Traffic
    from workers.scheduling import station_queue

    suffix = uuid.uuid4().hex[:8]
    cat = _catalogue(suffix)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(t.topic, partitions, 1) for t in cat.input_topics]
                        + [NewTopic(t.topic, 1, 1) for t in cat.output_topics])
    admin.close()
    r = redis.Redis.from_url(redis_url)
    r.flushall()
    cfg = settings_dict(cat, bootstrap, redis_url, f"e2e-{suffix}", min_interval_s=min_interval_s)
    natural = natural_rate(stations, cat, SEED)
    result: dict[str, Any] = {"stations": stations, "natural_records_s": natural, "workers": workers,
                              "ingesters": 1, "partitions": partitions,
                              "min_interval_s": "defaults" if min_interval_s is None else min_interval_s}
    outputs = Outputs(bootstrap, [t.topic for t in cat.output_topics])
    outputs.start()
    wprocs = start_workers(cfg, workers, r)
    ing = Ingesters(cfg, 1).start()
    sender = Sender(bootstrap, Traffic(stations=stations, seed=SEED, catalogue=cat,
                                       start_ms=int(time.time() * 1000)))
    depth = station_queue(r, "stationflow")
    try:
        time.sleep(1.0)
        result["rss_start"] = {"ingester": ing.rss(), "workers": [rss_bytes(p.pid) for p in wprocs]}
        t0 = time.monotonic()
        n0 = sender.burst_until(sender.sim_ms)
        ing.wait_done(n0, 180)
        _drain(r, depth, 120)
        result["warmup"] = {"messages": n0, "seconds": time.monotonic() - t0}
        log(f"  e2e warm-up: {n0} messages (initial state of {stations} stations) in {time.monotonic() - t0:.1f} s")

        redis_pid = int(r.info("server")["process_id"])
        timeouts = {m.name: int(m.batch_timeout_s * 1000) for m in cat.modules}

        def cpu_now() -> dict[str, float]:
            return {"machine": machine_busy_s(), "workers": sum(cpu_seconds(p.pid) for p in wprocs),
                    "ingester": sum(cpu_seconds(p.pid) for p in ing.procs), "redis": cpu_seconds(redis_pid),
                    "bench (producer, output consumer)": cpu_seconds(os.getpid())}

        phases = [("steady", rate, seconds)] + [(f"step {s:.0f}/s", s, step_seconds) for s in steps]
        summaries, done = [], []
        for name, target, secs in phases:
            ph = Phase(name, target, int(time.time() * 1000), stations=stations)
            jobs0, cpu0, runs0 = _jobs_done(r), sum(cpu_seconds(p.pid) for p in wprocs), run_counters(r)
            sj0 = station_jobs_done(r)
            stop = threading.Event()
            sampler = threading.Thread(target=_sample, args=(ing, depth, ph, stop), daemon=True)
            sampler.start()
            c0 = cpu_now()
            ph.sent, ph.wall_s = sender.paced(target / natural, secs)
            ph.cores = {k: (v - c0[k]) / ph.wall_s for k, v in cpu_now().items()} if ph.wall_s else {}
            ph.t1_ms = int(time.time() * 1000)
            ph.producer_behind_s = sender.behind_s
            ph.jobs_done = _jobs_done(r) - jobs0
            ph.station_jobs_done = station_jobs_done(r) - sj0
            stop.set()
            sampler.join()
            _settle(ing, sender, r, depth, 60)
            ph.jobs_settled = _jobs_done(r) - jobs0  # with the phase's backlog, as its CPU time
            ph.station_jobs_settled = station_jobs_done(r) - sj0
            ph.worker_cpu_s = sum(cpu_seconds(p.pid) for p in wprocs) - cpu0
            ph.counters = {k: v - runs0.get(k, 0) for k, v in run_counters(r).items()}
            s = summarise_phase(sender, outputs, ph)
            summaries.append(s)
            done.append(ph)
            log(f"  e2e {name}: {s['achieved_records_s']:.0f} records/s, {s['envelopes']} envelopes, "
                f"p50 {s['p50_ms']:.0f} p95 {s['p95_ms']:.0f} p99 {s['p99_ms']:.0f} ms, ingest lag at end "
                f"{s['ingest_lag_end_ms']:.0f} ms, {s['worker_jobs_s']:.0f} jobs/s "
                f"({s['station_jobs_s']:.0f} station jobs/s), {s['worker_cpu_ms_per_job']:.1f} worker CPU ms/job "
                f"({s['worker_cpu_ms_per_station_job']:.1f} per station job), runs {s['runs']}, "
                f"cores {', '.join(f'{k} {v:.2f}' for k, v in ph.cores.items())}, sustainable {s['sustainable']}")
            if name != "steady" and not s["sustainable"]:
                # judged on the batches the rate limit did not defer, as the final summary is
                deferred = deferred_batches(r, [b for b, _, _ in outputs.seen], timeouts)
                if not summarise_phase(sender, outputs, ph, 1, deferred)["sustainable"]:
                    break
        time.sleep(2.0)  # envelopes of batches that expired late are counted too
        deferred = deferred_batches(r, [b for b, _, _ in outputs.seen], timeouts)
        summaries = [summarise_phase(sender, outputs, ph, windows if i == 0 else 1, deferred)
                     for i, ph in enumerate(done)]
        result["steady"] = summaries[0]
        result["steps"] = summaries[1:]
        ok = [s["achieved_records_s"] for s in summaries[1:] if s["sustainable"]]
        result["max_sustainable_records_s"] = max(ok) if ok else None
        per_station = natural / stations
        result["max_sustainable_stations"] = (result["max_sustainable_records_s"] / per_station
                                              if ok and per_station else None)
        result["runs"] = run_counters(r)
        result["all_steps_sustainable"] = bool(summaries[1:]) and all(s["sustainable"] for s in summaries[1:])
        result["rss_end"] = {"ingester": ing.rss(), "workers": [rss_bytes(p.pid) for p in wprocs]}
        info = r.info("memory")
        result["redis_used_memory"] = int(info["used_memory"])
        result["counters"] = {k.decode(): int(v) for k, v in r.hgetall("sf:counters:ingest").items()}
        result["speed"] = rate / natural
    finally:
        sender.close()
        ing.stop()
        stop_workers(wprocs)
        outputs.stop()
    return result


def run_counters(r: Any) -> dict[str, int]:
    """Trigger outcomes so far: runs fired (of them deferred and released by the rate limit),
    triggers absorbed by coalescing and by the rate limit."""
    ing = {k.decode(): int(v) for k, v in r.hgetall("sf:counters:ingest").items()}
    trig = {k.decode(): int(v) for k, v in r.hgetall("sf:counters:triggers").items()}
    return {"fired": ing.get("triggers_fired", 0), "deferred": ing.get("triggers_deferred", 0),
            "released": sum(v for k, v in trig.items() if k.endswith(":released")),
            "absorbed_coalescing": ing.get("triggers_absorbed", 0),
            "absorbed_rate_limit": ing.get("triggers_rate_limited", 0)}


def _jobs_done(r: Any) -> int:
    """Station jobs the registered workers finished so far (RQ's own per-worker counts)."""
    from rq import Worker

    return sum((getattr(w, "successful_job_count", 0) or 0) + (getattr(w, "failed_job_count", 0) or 0)
               for w in Worker.all(connection=r))


def _sample(ing: Ingesters, depth: Any, ph: Phase, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        ph.ingest_lag_ms.append(ing.lag_ms)
        ph.queue_depth.append(depth.count)


def _drain(r: Any, depth: Any, timeout_s: float) -> None:
    """Until the station-job queue is empty and no job runs (or the timeout)."""
    from rq import Worker

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if depth.count == 0 and all(w.get_current_job_id() is None for w in Worker.all(connection=r)):
            return
        time.sleep(0.2)


def _settle(ing: Ingesters, sender: Sender, r: Any, depth: Any, timeout_s: float) -> None:
    """Let the ingester consume what was sent and the workers drain, so phases don't overlap."""
    deadline = time.monotonic() + timeout_s
    while ing.done < sender.count and time.monotonic() < deadline:
        time.sleep(0.1)
    _drain(r, depth, max(1.0, deadline - time.monotonic()))
    time.sleep(1.0)  # batches completing now upload within the sweep interval


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--steps", default="1000,2000,3000,4000")
    ap.add_argument("--step-seconds", type=float, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--min-interval", type=float, default=None,
                    help="every module's min_interval_s (0 = no rate limit; default: the catalogue's)")
    a = ap.parse_args()
    from stationflow.local import start_broker, start_redis

    broker, server = start_broker(), start_redis()
    try:
        res = run_e2e(broker.bootstrap, server.url, stations=a.stations, rate=a.rate, seconds=a.seconds,
                      steps=[float(s) for s in a.steps.split(",") if s], step_seconds=a.step_seconds,
                      workers=a.workers, min_interval_s=a.min_interval)
        print(json.dumps(res, indent=1, default=str))
        print(f"max sustainable: {res['max_sustainable_records_s']} records/s; "
              f"steady p50/p95/p99 {res['steady']['p50_ms']:.0f}/{res['steady']['p95_ms']:.0f}/"
              f"{res['steady']['p99_ms']:.0f} ms; median of the steps' p50 "
              f"{statistics.median([s['p50_ms'] for s in res['steps']] or [float('nan')]):.0f} ms")
    finally:
        server.stop()
        broker.stop()


if __name__ == "__main__":
    main()
