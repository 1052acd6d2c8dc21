"""Small, blocking Kafka helpers for tests (kafka-python against Tansu or a real Kafka).

Tests share one broker per session, so every test that touches Kafka should use its own
topic names: `unique_catalogue()` gives a full catalogue whose topics carry a unique suffix.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.record import util as _record_util

from parsers.catalogue import Catalogue
from stationflow.local import wait_for

__all__ = [
    "CONSUMER_FETCH_SETTINGS",
    "CONSUMER_GROUP_TEST_SETTINGS",
    "PRODUCER_SETTINGS",
    "consume_all",
    "create_catalogue_topics",
    "create_topics",
    "crc32c_accelerated",
    "produce",
    "unique_catalogue",
    "unique_suffix",
]

#: short group timeouts so a test's rebalance or a killed member is noticed in seconds
CONSUMER_GROUP_TEST_SETTINGS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}

#: the production producer settings that change behaviour (stationflow.settings defaults):
#: idempotent, acks=all, large requests (multi-station pushes can exceed 1 MB)
PRODUCER_SETTINGS = {"acks": "all", "enable_idempotence": True, "max_request_size": 64 << 20, "linger_ms": 5}
#: consumer fetch sizes as in production
CONSUMER_FETCH_SETTINGS = {"fetch_max_bytes": 50 << 20, "max_partition_fetch_bytes": 1 << 20}


def crc32c_accelerated() -> bool:
    """True when kafka-python verifies record CRCs with the C `crc32c` module (as production does)."""
    return _record_util.crc32c_c is not None and _record_util._crc32c is _record_util.crc32c_c


def unique_suffix() -> str:
    return uuid.uuid4().hex[:10]


def unique_catalogue(suffix: str | None = None) -> Catalogue:
    """The default catalogue with every Kafka topic renamed `<topic>-<suffix>` (unique per call)."""
    suffix = suffix or unique_suffix()
    base = Catalogue.build()
    return Catalogue.build(topic_names={t.alias: f"{t.topic}-{suffix}" for t in base.topics})


def _admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sf-test-admin", request_timeout_ms=10000)


def _partition_count(admin: KafkaAdminClient, topic: str) -> int:
    meta = admin.describe_topics([topic])
    if not meta or meta[0].get("error_code", 0) != 0:
        return 0
    return len(meta[0].get("partitions") or [])


def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 2, timeout_s: float = 20.0) -> None:
    """Create topics (existing ones are left alone) and wait until metadata shows every partition."""
    names = list(dict.fromkeys(names))
    if not names:
        return
    admin = _admin(bootstrap)
    try:
        for name in names:
            try:
                admin.create_topics([NewTopic(name=name, num_partitions=partitions, replication_factor=1)])
            except TopicAlreadyExistsError:
                pass
        for name in names:
            wait_for(lambda n=name: _partition_count(admin, n) >= 1, timeout_s, f"topic {name} in metadata")
    finally:
        admin.close()


def create_catalogue_topics(bootstrap: str, catalogue: Catalogue, partitions: int = 2) -> list[str]:
    """Create every topic of `catalogue` (inputs and module outputs); returns their names."""
    names = [t.topic for t in catalogue.topics]
    create_topics(bootstrap, names, partitions)
    return names


def produce(bootstrap: str, topic: str, values: Sequence[bytes | None], partition: int | None = None,
            timestamp_ms: int | None = None, key: bytes | None = None,
            timeout_s: float = 20.0) -> list[tuple[int, int]]:
    """Send `values` in order, flush, and return [(partition, offset)] per value."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="sf-test-producer", **PRODUCER_SETTINGS)
    try:
        futures = [producer.send(topic, value=v, key=key, partition=partition, timestamp_ms=timestamp_ms)
                   for v in values]
        producer.flush(timeout_s)
        out = []
        for i, f in enumerate(futures):
            try:
                md = f.get(timeout=timeout_s)
            except KafkaError as exc:
                raise AssertionError(f"produce to {topic} failed for value #{i}: {exc!r}") from exc
            out.append((md.partition, md.offset))
        return out
    finally:
        producer.close(timeout=5)


def consume_all(bootstrap: str, topic: str, min_count: int, timeout_s: float = 20.0,
                group: str | None = None) -> list[ConsumerRecord]:
    """Read `topic` from the beginning of every partition until at least `min_count` records
    arrived or `timeout_s` passed; returns what was read, ordered by (partition, offset).

    Reads by assignment, never trusting end offsets alone: Tansu can under-report them.
    `group` only names the consumer (no offsets are committed).
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", client_id=group or "sf-test-reader",
                             consumer_timeout_ms=500, **CONSUMER_FETCH_SETTINGS)
    try:
        deadline = time.monotonic() + timeout_s
        parts: set[int] = set()
        while not parts:
            parts = consumer.partitions_for_topic(topic) or set()
            if parts:
                break
            if time.monotonic() >= deadline:
                return []
            time.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        seen: dict[tuple[int, int], ConsumerRecord] = {}
        while len(seen) < min_count and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200, max_records=5000)
            for records in batch.values():
                for rec in records:
                    seen[(rec.partition, rec.offset)] = rec
        # a short grace poll so callers asking for "at least N" also see stragglers already there
        if len(seen) >= min_count:
            for records in consumer.poll(timeout_ms=100).values():
                for rec in records:
                    seen[(rec.partition, rec.offset)] = rec
        return [seen[k] for k in sorted(seen)]
    finally:
        consumer.close()
