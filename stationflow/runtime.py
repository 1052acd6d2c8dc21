"""The wiring of the processes: ingesters and workers built from `Settings`.

`ingest` and `workers` never import each other, nor anything in `stationflow`; this module
connects them: the ingester schedules runs through `workers.scheduling`, asks its queue depth
for backpressure, and both report into the process's Prometheus registry
(`stationflow.metrics`) through the observers they expose. The CLI commands only parse their
options and call these functions; the demo, the App, the bench and the tests call them too,
so there is one way to build each process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from parsers.batches import PlannedRun

log = logging.getLogger("stationflow.runtime")


# ---- ingester -----------------------------------------------------------------------------


def scheduler(settings: Any) -> Callable[..., Any]:
    """`schedule(r, runs, marks=None)` backed by workers.scheduling (coalescing, batches,
    enqueue, replay marks); the batches it creates are counted in the process's metrics."""
    from stationflow import metrics as m
    from workers.scheduling import ScheduleOptions, schedule

    options = ScheduleOptions.from_settings(settings, connect=True)
    catalogue = settings.catalogue

    def schedule_runs(r: Any, runs: Sequence[PlannedRun], marks: Any = None) -> Any:
        res = schedule(r, catalogue, runs, options, marks=marks)
        for module, n in res.created.items():
            m.BATCHES.inc(n, module=module, outcome="created")
        return res

    return schedule_runs


def queue_depth(settings: Any) -> Callable[[Any], int]:
    """`depth(r)`: jobs waiting in the station-job queue (one LLEN, on queue.redis_url if set)."""
    from workers.scheduling import station_queue

    queue_r = settings.connect_queue() if settings.queue.redis_url is not None else None

    def depth(r: Any) -> int:
        return station_queue(r if queue_r is None else queue_r, settings.queue.name).count

    return depth


def build_ingester(settings: Any, **options: Any) -> Any:
    """An `ingest.service.Service` scheduling into the configured queue, paused by its depth.
    `options` are those of `ingest.service.build` (topics, modules, group, until_idle_s, ...)."""
    from ingest.service import build

    return build(settings, scheduler(settings), queue_depth=queue_depth(settings), **options)


def export_ingest_metrics(stats: Any, ingester: Any, queue: str | None = None,
                          depth: Callable[[], int] | None = None, topics: Sequence[str] = ()) -> None:
    """Mirror the ingest counters into the process's Prometheus registry; `depth()` (the
    queue's length) is read at each scrape."""
    import redis

    from stationflow import metrics as m

    by_field = {"messages": m.MESSAGES, "records": m.RECORDS, "stamped": m.STAMPED,
                "stale_on_arrival": m.STALE_ON_ARRIVAL}
    totals = {"replays_skipped": m.REPLAYS_SKIPPED, "hours_ignored": m.HOURS_IGNORED,
              "late_orders": m.LATE_ORDERS, "seconds_evicted": m.SECONDS_EVICTED}
    m.start_ingest_series(topics)
    if queue is not None and depth is not None:
        m.REGISTRY.add_collector(m.queue_depth_collector(queue, depth, redis.RedisError))
    histograms = {"write": m.REDIS_WRITE_SECONDS, "schedule": m.ENQUEUE_SECONDS,
                  "commit": m.COMMIT_SECONDS, "poll_records": m.POLL_RECORDS}

    def observe(group: str, field: str, n: int) -> None:
        if group.startswith("topic:"):
            fam = by_field.get(field)
            if fam is not None:
                fam.inc(n, topic=group[6:])
            elif field.startswith("dead:"):
                m.DEAD_LETTERS.inc(n, topic=group[6:], reason=field[5:])
        elif group == "triggers":
            module, _, outcome = field.rpartition(":")
            m.TRIGGERS.inc(n, module=module, outcome=outcome)
        elif group == "ingest":
            _ingest_field(m, totals, field, n)

    def on_lag(lag: Any) -> None:
        for tp, n in lag.items():
            m.CONSUMER_LAG.set(n, topic=tp.topic, partition=str(tp.partition))

    def sample(name: str, value: float) -> None:
        h = histograms.get(name)
        if h is not None:
            h.observe(value)

    def released(partitions: Any) -> None:
        for tp in partitions:  # series of partitions we no longer own would go stale
            m.REGISTRY.remove({"topic": tp.topic, "partition": str(tp.partition)})

    stats.observers.append(observe)
    stats.samplers.append(sample)
    ingester.on_lag = on_lag
    ingester.on_released = released


def _ingest_field(m: Any, totals: dict[str, Any], field: str, n: int) -> None:
    """One counter of the `ingest` group into its metric family (those without one: none)."""
    if field in totals:
        totals[field].inc(n)
    elif field == "pauses":
        m.PAUSES.inc(n)
        m.PAUSED.set(1)
    elif field == "resumes":
        m.PAUSED.set(0)
    elif field == "store_retries":
        m.STORE_ERRORS.inc(n, operation="redis")
    elif field == "kafka_retries":
        m.STORE_ERRORS.inc(n, operation="kafka")


def run_ingester(svc: Any, metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
                 queue: str | None = None) -> int:
    """Run a built ingester until SIGTERM/SIGINT (finish the poll, commit, stop) or until it
    is idle; serve /metrics meanwhile when `metrics_port` is set (with the depth of `queue`).
    Returns the exit status."""
    from stationflow import metrics
    from workers.scheduling import station_queue

    server = None
    if metrics_port is not None:
        own = svc.ingester.queue_depth  # the configured queue's depth (on queue.redis_url when set)
        depth = (own if own is not None else lambda: station_queue(svc.redis, queue).count) \
            if queue is not None else None
        export_ingest_metrics(svc.stats, svc.ingester, queue, depth, [t.topic for t in svc.topics])
        server = metrics.serve(metrics_port, host=metrics_host)
        log.info("metrics on %s", server.url)

    def on_signal(signum: int, frame: object) -> None:
        log.info("%s received: finishing the current poll, committing and stopping",
                 signal.Signals(signum).name)
        svc.ingester.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        code = svc.ingester.run()
    except Exception:
        log.exception("ingester stopped by an unrecoverable error")
        code = 1
    finally:
        if server is not None:
            server.stop()
    sys.stdout.flush()
    return int(code)


# ---- workers ------------------------------------------------------------------------------

_WORKER_COUNTS: dict[str, str] = {
    "jobs": "JOBS", "runs": "RUNS", "batches": "BATCHES", "batch_stations": "BATCH_STATIONS",
    "upload_errors": "UPLOAD_ERRORS", "result_fixups": "RESULT_FIXUPS", "runs_released": "RUNS_RELEASED",
}
_WORKER_SAMPLES: dict[str, str] = {
    "job_seconds": "JOB_SECONDS", "algorithm_seconds": "ALGORITHM_SECONDS", "batch_seconds": "BATCH_SECONDS",
}
_worker_metrics_on = False


def export_worker_metrics() -> None:
    """Mirror the workers' events (`workers.events`) into the process's Prometheus registry;
    idempotent (a process has one registry and one set of worker events)."""
    global _worker_metrics_on
    if _worker_metrics_on:
        return
    from stationflow import metrics as m
    from workers import events

    counters = {name: getattr(m, attr) for name, attr in _WORKER_COUNTS.items()}
    histograms = {name: getattr(m, attr) for name, attr in _WORKER_SAMPLES.items()}

    def count(name: str, n: int, labels: dict[str, str]) -> None:
        counters[name].inc(n, **labels)

    def sample(name: str, value: float, labels: dict[str, str]) -> None:
        histograms[name].observe(value, **labels)

    events.EVENTS.counters.append(count)
    events.EVENTS.samplers.append(sample)
    _worker_metrics_on = True


def worker_context(settings: Any = None) -> Any:
    """The `WorkerContext` of a worker process from `settings` (default: `Settings.load()`,
    i.e. the file and STATIONFLOW_* variables), with the worker metrics exported. A plain
    `rq worker` gets here through `workers.context.CONTEXT_FACTORY`."""
    from workers import context as wctx

    if settings is None:
        from stationflow.settings import Settings

        settings = Settings.load()
    export_worker_metrics()
    return wctx.WorkerContext.from_settings(settings)


def run_worker(settings: Any, queues: list[str], *, burst: bool = False, max_jobs: int | None = None,
               metrics_port: int | None = None, name: str | None = None) -> int:
    """One in-process RQ worker with the sweeper thread; returns the exit status.
    Raises `workers.algorithms.AlgorithmImportError` when an algorithm cannot be imported."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    from workers import context as wctx
    from workers.rqworker import StationWorker
    from workers.sweeper import SweeperThread, sweep, wait_for_deferred

    ctx = worker_context(settings)
    ctx.background_upload = True  # flushed below, before the process exits
    wctx.install(ctx)
    # RQ blocks on BLPOP for minutes: its connection must not have the store's short timeout
    rq_conn = settings.connect_queue(socket_timeout=None)
    qs = [Queue(q, connection=rq_conn, serializer=JSONSerializer) for q in queues]
    worker = StationWorker(qs, connection=rq_conn, serializer=JSONSerializer, name=name)
    if metrics_port is not None:
        _serve_worker_metrics(ctx, rq_conn, queues, metrics_port)
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    if burst:
        while sweep(ctx):
            pass
        worker.work(burst=True, max_jobs=max_jobs, logging_level=level)
        while max_jobs is None and wait_for_deferred(ctx):  # rate control: run the trailing runs too
            while sweep(ctx):
                pass
            worker.work(burst=True, logging_level=level)
        if ctx.uploader is not None:
            ctx.uploader.flush(30.0)
        while sweep(ctx):
            pass
    else:
        sweeper = SweeperThread(ctx)
        sweeper.start()
        try:
            worker.work(max_jobs=max_jobs, logging_level=level)
        finally:
            sweeper.stop()
    if ctx.uploader is not None:
        ctx.uploader.close()
    return 0


def _serve_worker_metrics(ctx: Any, rq_conn: Any, queues: list[str], port: int) -> None:
    """/metrics of a worker process: every module's series from the start, the depth of each
    queue it serves read at each scrape."""
    import redis

    from stationflow import metrics
    from workers.scheduling import station_queue

    metrics.start_worker_series(ctx.catalogue.local_modules())

    def depth_of(name: str) -> Callable[[], int]:
        return lambda: station_queue(rq_conn, name).count

    for q in queues:
        metrics.REGISTRY.add_collector(metrics.queue_depth_collector(q, depth_of(q), redis.RedisError))
    metrics.serve(port)


def _pool_child(config_path: str | None, queues: list[str], burst: bool, max_jobs: int | None,
                metrics_port: int | None, index: int) -> None:
    from stationflow.settings import Settings

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker-{index} %(levelname)s %(name)s: %(message)s")
    settings = Settings.load(config_path)
    port = None if metrics_port is None else metrics_port + index
    sys.exit(run_worker(settings, queues, burst=burst, max_jobs=max_jobs, metrics_port=port))


def run_pool(config_path: str | None, queues: list[str], processes: int, *, burst: bool,
             max_jobs: int | None, metrics_port: int | None) -> int:
    """A tiny supervisor: N worker processes (spawned, not forked: no inherited connections),
    SIGINT/SIGTERM forwarded, exit status = the worst child's."""
    mp = multiprocessing.get_context("spawn")
    children = [mp.Process(target=_pool_child, args=(config_path, queues, burst, max_jobs, metrics_port, i),
                           name=f"stationflow-worker-{i}") for i in range(processes)]
    for c in children:
        c.start()

    def forward(signum: int, _frame: Any) -> None:
        for c in children:
            if c.is_alive() and c.pid:
                try:
                    os.kill(c.pid, signum)
                except ProcessLookupError:
                    pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for c in children:
            c.join()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return max((c.exitcode or 0) for c in children)
