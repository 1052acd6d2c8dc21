"""The processes the end-to-end benchmark starts: ingesters counting what they processed into
shared values, `stationflow worker` processes, RQ worker pools, and the bare kafka-python
consume baseline. Used by bench/e2e_bench.py and bench/report.py."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MP = multiprocessing.get_context("spawn")
#: an ingester child counts these into shared values the parent samples
_SHARED = ("done", "first", "last", "lag_ms")


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _quiet() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")


# ---- ingester processes -------------------------------------------------------------------

def _ingester_child(cfg: dict[str, Any], shared: dict[str, Any], start: Any, stop: Any, gate: Any) -> None:
    """One `stationflow ingest` in this process; counts processed records into `shared`."""
    _quiet()
    from stationflow.runtime import build_ingester
    from stationflow.settings import Settings

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = Settings.from_dict(cfg)
    svc = build_ingester(settings)
    proc = svc.ingester.processor
    inner = proc.execute

    def execute(fl: Any) -> None:
        if fl.records and shared["first"].value == 0:
            # a poll that was already waiting when the run was reset returned its records: the
            # clock starts no later than their processing (else a small run could have no start)
            shared["first"].value = time.time()
        inner(fl)
        now_ms = time.time() * 1000
        if fl.records:
            shared["lag_ms"].value = now_ms - min(r.timestamp for r in fl.records)
        with shared["done"].get_lock():
            shared["done"].value += len(fl.records)
        shared["last"].value = time.time()

    proc.execute = execute
    consumer = svc.ingester.consumer
    poll = consumer.poll

    def gated_poll(*a: Any, **kw: Any) -> Any:
        if not gate.is_set():  # a timed run is being produced: fetch nothing until it is all there
            time.sleep(0.02)
            return {}
        if shared["first"].value == 0:  # the clock starts with the first fetch of the run
            shared["first"].value = time.time()
        return poll(*a, **kw)

    consumer.poll = gated_poll
    if start is not None:
        start.wait(60)  # every member subscribes at once: one initial rebalance, not two
    th = threading.Thread(target=svc.ingester.run, daemon=True)
    th.start()
    while not stop.wait(0.1):  # the parent waits for a settled group before it produces
        try:
            shared["assigned"].value = len(svc.ingester.consumer.assignment())
        except Exception:  # noqa: BLE001 - the set changed under us: read it next time
            pass
    svc.ingester.stop()
    th.join(30)


@dataclass
class Ingesters:
    """N ingester processes of one consumer group and their shared counters."""

    cfg: dict[str, Any]
    n: int = 1
    procs: list[Any] = field(default_factory=list)
    shared: list[dict[str, Any]] = field(default_factory=list)

    def start(self) -> Ingesters:
        self._stop, self.gate = MP.Event(), MP.Event()
        self.gate.set()
        # kept on self: a synchronisation object collected in the parent vanishes for the children
        self._barrier = barrier = MP.Barrier(self.n) if self.n > 1 else None
        for _ in range(self.n):
            sh = {"done": MP.Value("q", 0), "first": MP.Value("d", 0.0), "last": MP.Value("d", 0.0),
                  "lag_ms": MP.Value("d", 0.0, lock=False), "assigned": MP.Value("i", 0, lock=False)}
            p = MP.Process(target=_ingester_child, args=(self.cfg, sh, barrier, self._stop, self.gate), daemon=True,
                           name="bench-ingester")
            p.start()
            self.procs.append(p)
            self.shared.append(sh)
        return self

    @property
    def done(self) -> int:
        return sum(s["done"].value for s in self.shared)

    @property
    def lag_ms(self) -> float:
        return max(s["lag_ms"].value for s in self.shared)

    def rate(self) -> float:
        """Records/s from the first record any member processed to the last."""
        first = min(s["first"].value for s in self.shared if s["first"].value)
        last = max(s["last"].value for s in self.shared)
        return self.done / (last - first)

    def wait_assigned(self, partitions: int, timeout_s: float = 90) -> float:
        """Until every member owns part of the `partitions` and together all of them (one
        settled generation, so no rebalance stalls a timed run); returns the seconds waited."""
        t0 = time.monotonic()
        stable, since = None, 0.0
        while True:
            owned = [s["assigned"].value for s in self.shared]
            if all(owned) and sum(owned) == partitions:
                if owned != stable:
                    stable, since = owned, time.monotonic()
                elif time.monotonic() - since >= 2.0:
                    return time.monotonic() - t0
            else:
                stable = None
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"consumer group not settled in {timeout_s:.0f} s: partitions owned {owned}")
            if not all(p.is_alive() for p in self.procs):
                raise RuntimeError("an ingester process died")
            time.sleep(0.1)

    def reset(self) -> None:
        """Start a new timed run on the live processes."""
        for s in self.shared:
            with s["done"].get_lock():
                s["done"].value = 0
            s["first"].value = s["last"].value = 0.0

    def timed(self, produce: Callable[[], int], timeout_s: float = 120) -> float:
        """Records/s of one run: the gate holds every member's polls while `produce()` puts
        the run's records on the topics, then opens; the clock runs from the first record
        any member processed to the last."""
        self.gate.clear()
        time.sleep(0.2)  # polls already under way return before the records exist
        self.reset()
        n = produce()
        self.gate.set()
        self.wait_done(n, timeout_s)
        return self.rate()

    def wait_done(self, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.done < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ingesters processed {self.done} of {n} records in {timeout_s:.0f} s")
            if not all(p.is_alive() for p in self.procs):
                raise RuntimeError("an ingester process died")
            time.sleep(0.05)

    def rss(self) -> list[int]:
        return [rss_bytes(p.pid) for p in self.procs]

    def stop(self) -> None:
        self._stop.set()
        _reap(self.procs, 30)


def _reap(procs: list[Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)


def end_offsets(bootstrap: str, topics: list[str]) -> dict[Any, int]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in c.partitions_for_topic(t) or ()]
        return c.end_offsets(tps)
    finally:
        c.close()


def bare_consume_rate(cfg: dict[str, Any], start: dict[Any, int], n: int, timeout_s: float = 120) -> float:
    """A bare kafka-python consumer with the ingester's client settings reads the `n` records
    from `start` offsets (assigned, not subscribed: no group join per run) and only touches
    each value. Timed like the ingester: from the first fetch (connection already up) to the
    last record."""
    from kafka import KafkaConsumer

    from stationflow.settings import Settings

    kc = Settings.from_dict(cfg).kafka.consumer_config()
    kc["group_id"] = None
    c = KafkaConsumer(**kc)
    c.assign(list(start))
    for tp, off in start.items():
        c.seek(tp, off)
    c.topics()  # metadata and connection before the clock
    got, size = 0, 0
    deadline = time.monotonic() + timeout_s
    first = time.perf_counter()
    try:
        while got < n and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500, max_records=kc.get("max_poll_records", 2000)).values():
                got += len(recs)
                for r in recs:
                    size += len(r.value)
        end = time.perf_counter()
    finally:
        c.close(autocommit=False)
    if got < n:
        raise RuntimeError(f"bare consumer got {got} of {n} records")
    return got / (end - first)


# ---- worker processes ---------------------------------------------------------------------

def _worker_child(cfg: dict[str, Any]) -> None:
    """`stationflow worker` (one SimpleWorker + sweeper) until SIGTERM."""
    _quiet()
    from stationflow.runtime import run_worker
    from stationflow.settings import Settings

    settings = Settings.from_dict(cfg)
    _count_station_jobs(settings.redis.url)
    run_worker(settings, [settings.queue.name])


#: Redis key prefix of each bench worker's count of station jobs (a group job runs several)
STATION_JOBS_KEY = "bench:station_jobs:"


def _count_station_jobs(redis_url: str) -> None:
    """Publish this process's station jobs (workers.events `jobs`, one per station of a group
    job) to `STATION_JOBS_KEY<pid>` every 0.2 s, so the bench can divide by station jobs."""
    import redis

    from workers import events

    done = [0]

    def observe(name: str, n: int, labels: dict[str, str]) -> None:
        if name == "jobs":
            done[0] += n

    events.EVENTS.counters.append(observe)
    r = redis.Redis.from_url(redis_url)
    key = f"{STATION_JOBS_KEY}{os.getpid()}"

    def publish() -> None:
        while True:
            r.set(key, done[0])
            time.sleep(0.2)

    threading.Thread(target=publish, daemon=True, name="bench-station-jobs").start()


def station_jobs_done(r: Any) -> int:
    """Station jobs the bench workers have run so far (their published counts)."""
    keys = list(r.scan_iter(f"{STATION_JOBS_KEY}*"))
    return sum(int(v or 0) for v in r.mget(keys)) if keys else 0


def start_workers(cfg: dict[str, Any], n: int, redis_client: Any, timeout_s: float = 60) -> list[Any]:
    from rq import Worker

    procs = []
    for _ in range(n):
        p = MP.Process(target=_worker_child, args=(cfg,), daemon=True, name="bench-worker")
        p.start()
        procs.append(p)
    deadline = time.monotonic() + timeout_s
    while len(Worker.all(connection=redis_client)) < n:
        if time.monotonic() > deadline or not all(p.is_alive() for p in procs):
            stop_workers(procs)
            raise RuntimeError("worker processes did not register")
        time.sleep(0.1)
    return procs


def stop_workers(procs: list[Any]) -> None:
    for p in procs:
        if p.is_alive() and p.pid:
            os.kill(p.pid, signal.SIGTERM)  # RQ's warm shutdown: finish the current job
    _reap(procs, 20)


def _pool_child(redis_url: str, queue: str, station_jobs: bool, ready: Any, start: Any, out: Any) -> None:
    """Drain `queue` with a SimpleWorker (burst) after the start signal; report the end time."""
    _quiet()
    import redis
    from rq import Queue
    from rq.serializers import JSONSerializer

    from workers.rqworker import StationWorker

    r = redis.Redis.from_url(redis_url)
    if station_jobs:
        from bench.jobs_bench import job_catalogue, noop
        from workers import context as wctx

        cat = job_catalogue()
        ctx = wctx.WorkerContext.build(r, cat, algorithms={m: noop for m in cat.local_modules()})
        ctx.uploader = None
        wctx.install(ctx)
    w = StationWorker([Queue(queue, connection=r, serializer=JSONSerializer)], connection=r,
                     serializer=JSONSerializer)
    ready.put(os.getpid())
    start.wait(60)
    w.work(burst=True, logging_level="WARNING")
    out.put(time.time())


def pool_rate(redis_url: str, queue: str, jobs: int, n: int, station_jobs: bool) -> float:
    """Jobs/s of `n` worker processes draining `jobs` already enqueued on `queue`."""
    ready, start, out = MP.Queue(), MP.Event(), MP.Queue()
    procs = [MP.Process(target=_pool_child, args=(redis_url, queue, station_jobs, ready, start, out), daemon=True)
             for _ in range(n)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=60)  # imported and connected: the clock starts with the work
        t0 = time.time()
        start.set()
        ends = [out.get(timeout=300) for _ in procs]
        return jobs / (max(ends) - t0)
    finally:
        _reap(procs, 30)
