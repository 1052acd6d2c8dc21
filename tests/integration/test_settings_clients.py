"""The kwargs Settings hands out work with the real clients: redis via store.connection,
kafka-python's producer, consumer (in a group) and admin client against the test broker."""

from __future__ import annotations

import time

from kafkautil import create_topics, unique_suffix

from stationflow.settings import Settings


def test_redis_connect_from_settings(redis_url: str) -> None:
    s = Settings.from_dict({"redis": {"url": redis_url, "socket_timeout": 3, "connect_timeout": 2}})
    r = s.redis.connect()
    try:
        r.set("sf-settings-check", b"1")
        assert r.get("sf-settings-check") == b"1"
        assert r.delete("sf-settings-check") == 1
    finally:
        r.close()


def test_kafka_clients_accept_settings_kwargs(kafka_bootstrap: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient

    topic = f"sf-settings-{unique_suffix()}"
    s = Settings.from_dict({"kafka": {
        "bootstrap_servers": kafka_bootstrap,
        "group_id": f"g-{topic}",
        "compression_type": "gzip",
        # a short session makes the test broker assign partitions quickly
        "consumer": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
    }})
    create_topics(kafka_bootstrap, [topic], partitions=2)
    admin = KafkaAdminClient(**s.kafka.admin_config())
    try:
        assert topic in admin.list_topics()
    finally:
        admin.close()
    producer = KafkaProducer(**s.kafka.producer_config())
    try:
        sent = [producer.send(topic, f"v{i}".encode(), partition=i % 2).get(timeout=30) for i in range(4)]
    finally:
        producer.close()
    assert sorted((m.partition, m.offset) for m in sent) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    consumer = KafkaConsumer(topic, **s.kafka.consumer_config())
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while len(got) < 4 and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                got.extend(m.value for m in recs)
        # auto-commit is off: nothing committed until the caller commits
        assert consumer.config["enable_auto_commit"] is False
        consumer.commit()
    finally:
        consumer.close()
    assert sorted(got) == [b"v0", b"v1", b"v2", b"v3"]
