"""`stationflow worker`: RQ workers for station jobs, in-process (no fork per job), JSON jobs.

A station job is a few milliseconds of Redis round trips plus the algorithms; forking a work
horse per job would cost more than the job, so the worker is RQ's `SimpleWorker` (as
`workers.rqworker.StationWorker`, which stops within seconds of SIGTERM). For more
parallelism run more processes (`--processes N`, or more containers). Each process also runs
the batch sweeper on a daemon thread every `batch.sweep_interval_s`.

Equivalent plain RQ command (the job reads its settings from STATIONFLOW_* / the config file):
    rq worker --url "$STATIONFLOW_REDIS_URL" --serializer rq.serializers.JSONSerializer --worker-class workers.rqworker.StationWorker stationflow
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from stationflow.cli import get_settings

log = logging.getLogger(__name__)


def run_worker(settings: Any, queues: list[str], *, burst: bool = False, max_jobs: int | None = None,
               metrics_port: int | None = None, name: str | None = None) -> int:
    """One in-process RQ worker with the sweeper thread; returns the exit status."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    from stationflow import metrics
    from workers import context as wctx
    from workers.rqworker import StationWorker
    from workers.sweeper import SweeperThread, sweep, wait_for_deferred

    ctx = wctx.WorkerContext.from_settings(settings)  # bad paths, Redis down: one line at the CLI entry
    ctx.background_upload = True  # flushed below, before the process exits
    wctx.install(ctx)
    # RQ blocks on BLPOP for minutes: its connection must not have the store's short timeout
    rq_conn = settings.redis.connect(socket_timeout=None)
    qs = [Queue(q, connection=rq_conn, serializer=JSONSerializer) for q in queues]
    worker = StationWorker(qs, connection=rq_conn, serializer=JSONSerializer, name=name)
    if metrics_port is not None:
        import redis

        from workers.scheduling import station_queue

        metrics.start_worker_series(ctx.catalogue.local_modules())
        def depth_of(name: str) -> Callable[[], int]:
            return lambda: station_queue(rq_conn, name).count

        for q in queues:
            metrics.REGISTRY.add_collector(metrics.queue_depth_collector(q, depth_of(q), redis.RedisError))
        metrics.serve(metrics_port)
    if burst:
        while sweep(ctx):
            pass
        worker.work(burst=True, max_jobs=max_jobs, logging_level=_level())
        while max_jobs is None and wait_for_deferred(ctx):  # rate control: run the trailing runs too
            while sweep(ctx):
                pass
            worker.work(burst=True, logging_level=_level())
        if ctx.uploader is not None:
            ctx.uploader.flush(30.0)
        while sweep(ctx):
            pass
    else:
        sweeper = SweeperThread(ctx)
        sweeper.start()
        try:
            worker.work(max_jobs=max_jobs, logging_level=_level())
        finally:
            sweeper.stop()
    if ctx.uploader is not None:
        ctx.uploader.close()
    return 0


def _child(config_path: str | None, queues: list[str], burst: bool, max_jobs: int | None,
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
    children = [mp.Process(target=_child, args=(config_path, queues, burst, max_jobs, metrics_port, i),
                           name=f"stationflow-worker-{i}") for i in range(processes)]
    for c in children:
        c.start()

    def forward(signum: int, _frame: Any) -> None:
        for c in children:
            if c.is_alive() and c.pid:
                try:
                    import os

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


@click.command()
@click.option("--queues", "-q", multiple=True, help="RQ queues to serve (default: queue.name from settings).")
@click.option("--burst", is_flag=True, help="Sweep due batches, drain the queues, sweep again and exit.")
@click.option("--max-jobs", type=int, default=None, help="Exit after this many jobs (per process).")
@click.option("--processes", "-n", type=int, default=1, show_default=True,
              help="Worker processes (each in-process; scale further with more hosts).")
@click.option("--metrics-port", type=int, default=None,
              help="Serve /metrics here (process i of --processes uses port + i).")
@click.option("--metrics-host", envvar="STATIONFLOW_METRICS_HOST", default="127.0.0.1", show_default=True,
              help="Address the metrics endpoint listens on (0.0.0.0 to expose it, e.g. in a container).")
@click.pass_context
def worker(ctx: click.Context, queues: tuple[str, ...], burst: bool, max_jobs: int | None, processes: int,
           metrics_port: int | None, metrics_host: str) -> None:
    """Run station jobs from the RQ queue(s) and sweep expired batches."""
    import os

    os.environ["STATIONFLOW_METRICS_HOST"] = metrics_host  # read by metrics.serve, here and in --processes children
    settings = get_settings(ctx)
    names = list(queues) or [settings.queue.name]
    if processes < 1:
        raise click.BadParameter("must be at least 1", param_hint="--processes")
    if processes == 1:
        ctx.exit(run_worker(settings, names, burst=burst, max_jobs=max_jobs, metrics_port=metrics_port))
    settings.redis.connect(retries=1)  # a Redis that cannot be reached fails here, once, not in every child
    config_path = (ctx.find_root().obj or {}).get("config_path") or settings.source
    ctx.exit(run_pool(config_path, names, processes, burst=burst, max_jobs=max_jobs, metrics_port=metrics_port))


def _level() -> str:
    return logging.getLevelName(logging.getLogger().getEffectiveLevel())
