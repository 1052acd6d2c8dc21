"""`stationflow ingest`: one ingester process (Kafka → Redis windows → station jobs).

Exit codes: 0 after a graceful stop (SIGTERM/SIGINT, or --until-idle), 2 for a configuration
error (bad settings, unknown topic or module), 1 for an unrecoverable error.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

import click

log = logging.getLogger("stationflow.ingest")


def _split(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def scheduler(settings: Any) -> Any:
    """`schedule(r, runs)` backed by workers.scheduling (coalescing, batches, enqueue)."""
    from stationflow import metrics as m
    from workers.scheduling import schedule_with

    def schedule(r: Any, runs: Any) -> Any:
        res = schedule_with(r, settings, runs)
        for module, n in res.created.items():
            m.BATCHES.inc(n, module=module, outcome="created")
        return res

    return schedule


def queue_depth(settings: Any) -> Any:
    """`depth(r)`: jobs waiting in the station-job queue (one LLEN)."""
    from workers.scheduling import station_queue

    def depth(r: Any) -> int:
        return station_queue(r, settings.queue.name).count

    return depth


def export_metrics(stats: Any, ingester: Any, queue: str | None = None, depth: Any = None,
                   topics: Any = ()) -> None:
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
    from ingest.service import IngestConfigError, build
    from stationflow.cli import CommandFailed, get_settings

    settings = get_settings(ctx)
    try:
        svc = build(settings, scheduler(settings), topics=_split(topics), modules=_split(modules),
                    group=group, instance_id=instance_id, from_beginning=from_beginning,
                    until_idle_s=until_idle, queue_depth=queue_depth(settings))
    except IngestConfigError as e:
        raise CommandFailed(str(e), 2, "config error") from None

    server = None
    if metrics_port is not None:
        from stationflow import metrics

        depth = queue_depth(settings)
        export_metrics(svc.stats, svc.ingester, settings.queue.name, lambda: depth(svc.redis),
                       [t.topic for t in svc.topics])
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
    ctx.exit(code)
