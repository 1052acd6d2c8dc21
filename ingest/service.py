"""Wiring an ingester from settings: Redis, the window store, dead letters, the consumer.

Used by `stationflow ingest`, the tests and the benchmark, so all three run the same thing.
The scheduler is passed in (the command gives it `workers.scheduling.schedule`): the ingester
decides *what* runs, the workers folder owns *how* it is queued.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from ingest.backpressure import QueueGate
from ingest.consumer import GroupFeatures, build_consumer, default_instance_id, slow_topics_needing_reset
from ingest.loop import Ingester
from ingest.options import LoopOptions
from ingest.process import Processor
from ingest.rebalance import make_listener
from ingest.stats import IngestStats
from parsers.batches import PlannedRun
from parsers.catalogue import Catalogue, CatalogueError, TopicSpec
from store.connection import is_cluster, wait_replicas
from store.counters import Counters
from store.dlq import DeadLetters
from store.marks import ScheduleMarks
from store.windows import WindowStore

log = logging.getLogger(__name__)

ScheduleFn = Callable[[Sequence[PlannedRun]], Any]


class IngestConfigError(ValueError):
    """Bad command-line selection (unknown topic or module): exit code 2."""


def select_topics(catalogue: Catalogue, names: Collection[str] | None) -> list[TopicSpec]:
    """The consumed topics, or the named subset (topic names or aliases)."""
    consumed = catalogue.consumed_topics()
    if not names:
        return list(consumed)
    out = []
    for n in names:
        try:
            spec = catalogue.topic(n)
        except CatalogueError as e:
            raise IngestConfigError(str(e)) from None
        if spec not in consumed:
            raise IngestConfigError(f"topic {spec.topic} is not consumed by this deployment "
                                    f"(output of a local or disabled module)")
        if spec not in out:
            out.append(spec)
    return out


def select_modules(catalogue: Catalogue, names: Collection[str] | None) -> frozenset[str] | None:
    if not names:
        return None
    out = set()
    for n in names:
        try:
            m = catalogue.module(n)
        except CatalogueError as e:
            raise IngestConfigError(str(e)) from None
        if m.runs != "local":
            raise IngestConfigError(f"module {m.name} is {m.runs}, not local: nothing to schedule")
        out.add(m.name)
    return frozenset(out)


@dataclass
class Service:
    ingester: Ingester
    stats: IngestStats
    redis: Any
    topics: list[TopicSpec]
    features: GroupFeatures


def build(
    settings: Any,
    schedule: Callable[..., Any],
    *,
    topics: Collection[str] | None = None,
    modules: Collection[str] | None = None,
    group: str | None = None,
    instance_id: str | None = None,
    from_beginning: bool = False,
    until_idle_s: float | None = None,
    queue_depth: Callable[[Any], int] | None = None,
    redis_client: Any = None,
    features: GroupFeatures | None = None,
) -> Service:
    """An ingester ready to `run()`. `schedule(r, runs[, marks])` (marks: the replay marks to
    record, store.marks.MarkPlan) and `queue_depth(r)` get the client."""
    catalogue: Catalogue = settings.catalogue
    specs = select_topics(catalogue, topics)
    mods = select_modules(catalogue, modules)
    r = redis_client if redis_client is not None else settings.redis.connect()
    store = WindowStore(r, catalogue, settings.prefix, outputs_keep=settings.outputs_keep)
    dlq = DeadLetters(r, settings.prefix, maxlen=settings.dlq_maxlen, raw_max_bytes=settings.dlq_raw_max_bytes)
    counters = Counters(r, settings.prefix)
    stats = IngestStats()

    def flush_counters(counts: dict[tuple[str, str], int]) -> None:
        # one MULTI: a reader never sees half a flush (e.g. a resume without the messages
        # ingested before it), so counters can be compared with each other. A MULTI cannot
        # span slots: on Redis Cluster only each group's hash is updated at once
        pipe = r.pipeline(transaction=not is_cluster(r))
        counters.incr_many(pipe, counts)
        pipe.execute()

    processor = Processor(
        catalogue, store, dlq, lambda runs, *marks: schedule(r, runs, *marks), stats,
        flush_counters=flush_counters, max_depth=settings.max_depth, modules=mods,
        marks=ScheduleMarks(r, settings.prefix, mods),
    )
    cfg = settings.kafka.consumer_config()
    ing = settings.ingest
    gate = QueueGate(settings.queue.high_water, settings.queue.low_water)
    options = LoopOptions(max_records=int(cfg.get("max_poll_records", 10000)), poll_timeout_ms=ing.poll_timeout_ms,
                          commit_interval_s=ing.commit_interval_s, summary_interval_s=ing.summary_interval_s,
                          until_idle_s=until_idle_s)
    ingester = Ingester(None, processor, stats, options, gate=gate,
                        queue_depth=(lambda: queue_depth(r)) if queue_depth is not None else None)
    if is_cluster(r):  # Redis Cluster replicates asynchronously: commit only what a replica also holds
        ingester.before_commit = lambda: wait_replicas(r, settings.prefix)
    consumer, feats = build_consumer(
        cfg, [s.topic for s in specs], make_listener(ingester),
        group_id=group, instance_id=instance_id or default_instance_id(),
        from_beginning=from_beginning, features=features,
        static_membership=settings.kafka.static_membership, assignor=settings.kafka.assignor,
    )
    ingester.consumer = consumer
    reset = "earliest" if from_beginning else cfg.get("auto_offset_reset", "earliest")
    ingester.slow_topics = slow_topics_needing_reset({"auto_offset_reset": reset}, (s.topic for s in specs if s.slow))
    if ingester.slow_topics:
        log.info("auto_offset_reset = %s applies to the fast topics; slow topics (%s) start from the earliest "
                 "offset when the group has no committed offset", reset, ", ".join(sorted(ingester.slow_topics)))
    log.info("ingesting %d topics into %s (prefix %s), group %s",
             len(specs), settings.redis.to_dict()["url"], settings.prefix, group or settings.kafka.group_id)
    return Service(ingester, stats, r, specs, feats)
