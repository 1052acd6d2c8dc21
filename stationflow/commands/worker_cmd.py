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

import click

from stationflow.cli import get_settings


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

    from stationflow import runtime

    os.environ["STATIONFLOW_METRICS_HOST"] = metrics_host  # read by metrics.serve, here and in --processes children
    settings = get_settings(ctx)
    names = list(queues) or [settings.queue.name]
    if processes < 1:
        raise click.BadParameter("must be at least 1", param_hint="--processes")
    if processes == 1:
        ctx.exit(runtime.run_worker(settings, names, burst=burst, max_jobs=max_jobs, metrics_port=metrics_port))
    settings.redis.connect(retries=1)  # a Redis that cannot be reached fails here, once, not in every child
    config_path = (ctx.find_root().obj or {}).get("config_path") or settings.source
    ctx.exit(runtime.run_pool(config_path, names, processes, burst=burst, max_jobs=max_jobs,
                              metrics_port=metrics_port))

