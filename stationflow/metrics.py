"""Process-local metrics in the Prometheus text format, plus the names every part of the system uses.

The registry itself is `stationflow.prometheus` (standard library only). Each process (ingester, worker) exposes its own registry;
the cluster-wide totals an operator reads with `stationflow status` live in Redis
(`store.counters`), these are for scraping rates and latencies per process.

Usage from other folders::

    from stationflow import metrics as m
    m.RECORDS.inc(n, topic=spec.topic)
    with m.REDIS_WRITE_SECONDS.time():
        store.apply(...)
    m.CONSUMER_LAG.set(lag, topic=t, partition=p)
    m.REGISTRY.remove({"topic": t, "partition": p})   # partition revoked

Nothing here does I/O at import time; `serve()` starts the HTTP endpoint when asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from stationflow.prometheus import (
    CONTENT_TYPE,
    LATENCY_BUCKETS,
    SIZE_BUCKETS,
    Counter,
    Gauge,
    Histogram,
    MetricError,
    Metrics,
    MetricsServer,
    escape_help,
    escape_label_value,
)
from stationflow.prometheus import serve as _serve

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "SIZE_BUCKETS", "Counter", "Gauge", "Histogram", "MetricError",
           "Metrics", "MetricsServer", "escape_help", "escape_label_value", "serve", "REGISTRY"]


# =========================================================================================
# The metric names of stationflow: declare here, import everywhere.
# Label conventions: `topic` = Kafka topic name, `partition` = int as text, `module` = module
# name, `reason` = dead-letter or failure reason code (spec §6.7 / §6.6).
# =========================================================================================

REGISTRY = Metrics()


def serve(port: int, registry: Metrics | None = None, host: str | None = None) -> MetricsServer:
    """`stationflow.prometheus.serve`, of `REGISTRY` unless another registry is given."""
    return _serve(port, REGISTRY if registry is None else registry, host)


# ---- ingester ---------------------------------------------------------------------------
MESSAGES = REGISTRY.counter("stationflow_messages_total", "Kafka messages ingested.", ["topic"])
RECORDS = REGISTRY.counter(
    "stationflow_records_total", "Per-station records fanned out of ingested messages.", ["topic"]
)
DEAD_LETTERS = REGISTRY.counter(
    "stationflow_dead_letters_total", "Dead-letter entries written, by topic and reason.", ["topic", "reason"]
)
# the four window outcomes below are per process, not per topic: `stationflow status` has the
# per-topic split (Redis counters `<prefix>:counters:topic:<topic>`)
REPLAYS_SKIPPED = REGISTRY.counter(
    "stationflow_replays_skipped_total", "Records skipped because their offset was already applied."
)
HOURS_IGNORED = REGISTRY.counter(
    "stationflow_hours_ignored_total", "Hourly items older than the window, ignored."
)
LATE_ORDERS = REGISTRY.counter("stationflow_late_orders_total", "Car orders that arrived late.")
SECONDS_EVICTED = REGISTRY.counter(
    "stationflow_order_seconds_evicted_total", "Closed order seconds evicted before delivery."
)
STALE_ON_ARRIVAL = REGISTRY.counter(
    "stationflow_stale_on_arrival_total",
    "Device records already older than the topic TTL when ingested (stored, hidden while stale).", ["topic"]
)
STAMPED = REGISTRY.counter(
    "stationflow_records_stamped_total", "Kafka records without a timestamp, stamped with ingest time.", ["topic"]
)
TRIGGERS = REGISTRY.counter(
    "stationflow_triggers_total",
    "Module triggers by outcome (fired, absorbed, rate_limited, not_ready; deferred: fired runs the rate "
    "limit deferred).", ["module", "outcome"]
)
POLL_RECORDS = REGISTRY.histogram(
    "stationflow_poll_records", "Records returned by one consumer poll.", buckets=SIZE_BUCKETS
)
REDIS_WRITE_SECONDS = REGISTRY.histogram(
    "stationflow_redis_write_seconds", "Time of one pipelined window write (one poll)."
)
ENQUEUE_SECONDS = REGISTRY.histogram(
    "stationflow_enqueue_seconds", "Time to schedule the runs of one poll (batches + enqueue)."
)
COMMIT_SECONDS = REGISTRY.histogram("stationflow_commit_seconds", "Time of one Kafka offset commit.")
CONSUMER_LAG = REGISTRY.gauge(
    "stationflow_consumer_lag", "High watermark minus position, per owned partition.", ["topic", "partition"]
)
PAUSES = REGISTRY.counter(
    "stationflow_ingest_pauses_total", "Times consumption was paused for backpressure (queue too deep)."
)
PAUSED = REGISTRY.gauge("stationflow_ingest_paused", "1 while consumption is paused for backpressure.")
STORE_ERRORS = REGISTRY.counter(
    "stationflow_store_errors_total", "Redis or Kafka failures that were retried (not bad input).", ["operation"]
)

# ---- workers ----------------------------------------------------------------------------
RUNS_RELEASED = REGISTRY.counter(
    "stationflow_deferred_runs_released_total",
    "Runs deferred by a module's min_interval_s, made pending once the interval passed.", ["module"]
)
JOBS = REGISTRY.counter("stationflow_jobs_total", "Station jobs finished, by outcome.", ["outcome"])
JOB_SECONDS = REGISTRY.histogram("stationflow_job_seconds", "Wall time of one RQ job (a group of stations, queue.group_size).")
RUNS = REGISTRY.counter(
    "stationflow_runs_total", "Module runs by module and outcome (ok, none, failed:<reason>).", ["module", "outcome"]
)
ALGORITHM_SECONDS = REGISTRY.histogram(
    "stationflow_algorithm_seconds", "Time inside one algorithm call.", ["module"]
)
QUEUE_DEPTH = REGISTRY.gauge("stationflow_queue_depth", "Jobs waiting in an RQ queue.", ["queue"])

# ---- batches ----------------------------------------------------------------------------
BATCHES = REGISTRY.counter(
    "stationflow_batches_total", "Batches by outcome (created, uploaded, skipped, expired).", ["module", "outcome"]
)
BATCH_STATIONS = REGISTRY.counter(
    "stationflow_batch_stations_total",
    "Station reports in batches (expected, ok, none, failed, timed_out, late).",
    ["module", "status"],
)
BATCH_SECONDS = REGISTRY.histogram(
    "stationflow_batch_seconds", "Batch creation to completion or expiry.", ["module"]
)
UPLOAD_ERRORS = REGISTRY.counter(
    "stationflow_upload_errors_total", "Failed output uploads (retried).", ["module"]
)
RESULT_FIXUPS = REGISTRY.counter(
    "stationflow_result_fixups_total",
    "Results corrected at upload (station_id_mismatch, non_finite, wrapped).",
    ["module", "kind"],
)

#: the kinds of RESULT_FIXUPS, as `store.tracker.Normalised` reports them
FIXUP_KINDS = ("station_id_mismatch", "non_finite", "wrapped")


def start_ingest_series(topics: Sequence[str] = ()) -> None:
    """Series an ingester exports from its start, at zero until something happens: an alert
    on `rate()` or on the paused gauge needs the series before the first event."""
    PAUSED.set(0)
    for topic in topics:
        STAMPED.inc(0, topic=topic)
        STALE_ON_ARRIVAL.inc(0, topic=topic)  # only device topics ever count, the others stay 0
    for op in ("redis", "kafka"):
        STORE_ERRORS.inc(0, operation=op)


def start_worker_series(modules: Sequence[str]) -> None:
    """The worker's error series per module, at zero from the start (see start_ingest_series)."""
    for mod in modules:
        UPLOAD_ERRORS.inc(0, module=mod)
        RUNS_RELEASED.inc(0, module=mod)
        for kind in FIXUP_KINDS:
            RESULT_FIXUPS.inc(0, module=mod, kind=kind)


def queue_depth_collector(queue: str, depth: Callable[[], int], on_error: type[Exception] | tuple[type[Exception], ...]
                          ) -> Callable[[], None]:
    """A collector setting QUEUE_DEPTH{queue} from `depth()` at each scrape; while `depth()`
    raises `on_error` (Redis unreachable) the series is dropped rather than left stale."""
    def collect() -> None:
        try:
            QUEUE_DEPTH.set(depth(), queue=queue)
        except on_error as e:
            logging.getLogger(__name__).warning("queue %s depth not exported: %s: %s", queue, type(e).__name__, e)
            QUEUE_DEPTH.remove(queue=queue)
    return collect
