"""`stationflow status`: cluster-wide figures from Redis (counters, queues, batches, workers)
and Kafka (consumer lag of the ingesters' group)."""

from __future__ import annotations

import json
import time
from typing import Any

import click


def snapshot(settings: Any, r: Any, *, lag: bool = True, queue_r: Any = None) -> Any:
    """One status snapshot; a Kafka that cannot be reached only blanks the lag."""
    from stationflow.status import consumer_lag, gather

    snap = gather(r, settings.prefix, settings.queue.name, queue_r=queue_r)
    if lag:
        topics = [t.topic for t in settings.catalogue.consumed_topics()]
        try:
            snap.lag = consumer_lag(settings.kafka.admin_config(), settings.kafka.group_id, topics)
        except Exception as e:  # noqa: BLE001 - status must still show the Redis side
            snap.lag_error = f"{type(e).__name__}: {e}"
    return snap


@click.command("status")
@click.option("--watch", type=click.FloatRange(min=0.5), metavar="SECONDS",
              help="Refresh every SECONDS (rates from counter deltas) until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one object per refresh).")
@click.option("--no-lag", is_flag=True, help="Skip the Kafka consumer-lag lookup.")
@click.pass_context
def status(ctx: click.Context, watch: float | None, as_json: bool, no_lag: bool) -> None:
    """Stations known, records ingested (and records/s with --watch), dead letters by reason,
    queue depths, RQ workers, open/uploaded/expired batches, runs per module and consumer lag
    per partition (committed vs end offsets of the group).
    The first line names the Redis read and the consumer group whose lag is shown (`source` in --json)."""
    from stationflow.cli import get_settings
    from stationflow.commands.common import source, source_line
    from stationflow.status import rates, render
    from store.dlq import old_dlq_warning

    settings = get_settings(ctx)
    r = settings.redis.connect(retries=1)
    queue_r = settings.connect_queue(retries=1) if settings.queue.redis_url is not None else None
    if warning := old_dlq_warning(r, settings.prefix):
        click.echo(warning, err=True)
    prev = None
    try:
        while True:
            snap = snapshot(settings, r, lag=not no_lag, queue_r=queue_r)
            if as_json:
                d = {"source": source(settings), **snap.to_dict()}
                if prev is not None:
                    d["rates"] = rates(prev, snap)
                click.echo(json.dumps(d, default=str))
            else:
                if watch and prev is not None:
                    click.echo("")
                click.echo(source_line(settings))
                click.echo(render(snap, prev))
            if not watch:
                return
            prev = snap
            time.sleep(watch)
    except KeyboardInterrupt:
        return
