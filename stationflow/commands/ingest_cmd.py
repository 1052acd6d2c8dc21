"""`stationflow ingest`: one ingester process (Kafka → Redis windows → station jobs).

Exit codes: 0 after a graceful stop (SIGTERM/SIGINT, or --until-idle), 2 for a configuration
error (bad settings, unknown topic or module), 1 for an unrecoverable error.
"""

from __future__ import annotations

import logging

import click

log = logging.getLogger("stationflow.ingest")


def _split(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


@click.command("ingest")
@click.option("--topics", help="Comma list of topics (names or aliases) to consume; default: all consumed topics.")
@click.option("--modules", help="Comma list of local modules to schedule; default: all local modules.")
@click.option("--group", help="Consumer group (overrides kafka.group_id).")
@click.option("--instance-id", help="Static group member id (default: host name + $STATIONFLOW_INSTANCE or pid).")
@click.option("--from-beginning", is_flag=True, help="A new group starts at the earliest offsets.")
@click.option("--until-idle", type=float, metavar="SECONDS",
              help="Exit 0 once no record arrived for SECONDS after the last commit and every "
                   "order second it opened is closed (waits up to order_close_s for them).")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics (/metrics) on this port.")
@click.option("--metrics-host", envvar="STATIONFLOW_METRICS_HOST", default="127.0.0.1", show_default=True,
              help="Address the metrics endpoint listens on (0.0.0.0 to expose it, e.g. in a container).")
@click.pass_context
def ingest(ctx: click.Context, topics: str | None, modules: str | None, group: str | None,
           instance_id: str | None, from_beginning: bool, until_idle: float | None,
           metrics_port: int | None, metrics_host: str) -> None:
    """Run an ingester: poll Kafka, write windows to Redis, schedule station jobs, commit.

    \b
    Exit codes: 0 stopped (SIGTERM/SIGINT or --until-idle), 1 unrecoverable error,
                2 configuration error.
    """
    from ingest.service import IngestConfigError
    from stationflow import runtime
    from stationflow.cli import CommandFailed, get_settings

    settings = get_settings(ctx)
    try:
        svc = runtime.build_ingester(settings, topics=_split(topics), modules=_split(modules), group=group,
                                     instance_id=instance_id, from_beginning=from_beginning,
                                     until_idle_s=until_idle)
    except IngestConfigError as e:
        raise CommandFailed(str(e), 2, "config error") from None
    ctx.exit(runtime.run_ingester(svc, metrics_port, metrics_host, settings.queue.name))
