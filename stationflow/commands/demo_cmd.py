"""`stationflow demo`: run the whole system locally (see stationflow/demo.py)."""

from __future__ import annotations

import click


@click.command("demo")
@click.option("--stations", default=20, show_default=True, type=click.IntRange(min=1), help="Simulated stations.")
@click.option("--duration", default=30.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds of traffic; then the pipeline drains and everything stops.")
@click.option("--ingesters", default=1, show_default=True, type=click.IntRange(min=1), help="`stationflow ingest` processes.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1), help="`stationflow worker` processes.")
@click.option("--speed", default=5.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Simulated seconds per wall second (5: a meter reading reaches most stations in a minute).")
@click.option("--redis-url", help="Use this Redis instead of starting a private one (its data is kept).")
@click.option("--redis-cluster", "redis_cluster", type=click.IntRange(min=1), metavar="N",
              help="Start a private Redis Cluster of N masters for the state and a plain Redis for the queues.")
@click.option("--kafka", "kafka", metavar="BOOTSTRAP", help="Use this Kafka instead of the bundled broker.")
@click.option("--seed", default=0, show_default=True, type=int, help="Traffic seed (same seed, same station ids).")
@click.option("--partitions", default=2, show_default=True, type=click.IntRange(min=1), help="Partitions per topic.")
@click.option("--bad-rate", default=0.002, show_default=True, type=click.FloatRange(0, 1),
              help="Share of deliberately bad messages (they end in `stationflow dlq`).")
@click.option("--heartbeat", "heartbeat_s", default=5.0, show_default=True, type=click.FloatRange(min=1),
              help="customer_mining heartbeat, seconds (it has no inputs: only a heartbeat runs it).")
@click.option("--drain-timeout", default=40.0, show_default=True, type=click.FloatRange(min=0),
              help="Longest wait for the pipeline to drain after the traffic stops.")
@click.option("--log-dir", type=click.Path(file_okay=False), help="Where the children log (default: a temp dir).")
@click.option("--json-summary", type=click.Path(dir_okay=False), help="Also write the summary as JSON here.")
@click.option("--keep", is_flag=True,
              help="After the summary, leave the servers, ingesters and workers running until Ctrl-C, and print "
                   "the `export` lines (Redis URL, Kafka, consumer group, config) that point every other "
                   "command, the examples and `rq worker` at them.")
@click.pass_context
def demo(ctx: click.Context, stations: int, duration: float, ingesters: int, workers: int, speed: float,
         redis_url: str | None, redis_cluster: int | None, kafka: str | None, seed: int, partitions: int, bad_rate: float, heartbeat_s: float, drain_timeout: float,
         log_dir: str | None, json_summary: str | None, keep: bool) -> None:
    """Run everything locally: a private redis-server and broker on free ports, all topics,
    ingesters, workers and realistic traffic; live progress, a drain, a summary of what each
    module produced, and a clean stop of every process it started (also on Ctrl-C). Its
    scratch folder (logs, Redis data) is removed unless --log-dir was given or something
    failed; --keep leaves everything running for the other commands until Ctrl-C.

    \b
    Exit codes: 0 ran clean, 1 something unexpected failed (the reason is printed),
                130 interrupted.
    """
    import logging
    import os

    from stationflow.cli import get_settings
    from stationflow.demo import run_demo
    from stationflow.demo_children import DemoOptions

    if redis_url and redis_cluster:
        raise click.UsageError("--redis-url and --redis-cluster exclude each other")
    config_path = (ctx.find_root().obj or {}).get("config_path")
    if config_path:  # checked here (one line, exit 2 when bad), then read by every child
        get_settings(ctx)
        os.environ["STATIONFLOW_CONFIG"] = os.path.abspath(config_path)

    # rq's lines drown the progress (children log to files; kafka's are quieted at the CLI
    # entry); the demo reports what matters itself
    logging.getLogger("rq").setLevel(logging.ERROR)
    opts = DemoOptions(stations=stations, duration_s=duration, ingesters=ingesters, workers=workers, speed=speed,
                       redis_url=redis_url, redis_cluster=redis_cluster, kafka=kafka, seed=seed, partitions=partitions, bad_rate=bad_rate,
                       heartbeat_s=heartbeat_s, drain_timeout_s=drain_timeout, log_dir=log_dir,
                       json_summary=json_summary, keep=keep)
    raise SystemExit(run_demo(opts, echo=click.echo))
