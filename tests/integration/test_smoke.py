"""The harness itself works: the private broker and redis-server round-trip real data."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import redis
from kafkautil import (
    CONSUMER_GROUP_TEST_SETTINGS,
    consume_all,
    crc32c_accelerated,
    create_catalogue_topics,
    create_topics,
    produce,
    unique_catalogue,
    unique_suffix,
)
from samplefiles import SAMPLES

from parsers.catalogue import Catalogue
from stationflow.local import start_redis


def test_kafka_produce_and_read_back(kafka_bootstrap: str) -> None:
    topic = f"smoke-{unique_suffix()}"
    create_topics(kafka_bootstrap, [topic], partitions=2)
    values = [f"msg-{i}".encode() for i in range(10)]
    sent = produce(kafka_bootstrap, topic, values[:5], partition=0) + \
        produce(kafka_bootstrap, topic, values[5:], partition=1, timestamp_ms=1_700_000_000_000)
    assert [p for p, _ in sent] == [0] * 5 + [1] * 5
    assert [o for _, o in sent] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]

    got = consume_all(kafka_bootstrap, topic, min_count=10, timeout_s=20)
    assert [(r.partition, r.offset, r.value) for r in got] == [
        (p, o, v) for (p, o), v in zip(sent, values, strict=True)
    ]
    assert {r.timestamp for r in got if r.partition == 1} == {1_700_000_000_000}


def test_kafka_sample_message_round_trips_byte_for_byte(kafka_bootstrap: str) -> None:
    """A real sample (large JSON) survives the broker unchanged, CRC-checked on the way back."""
    cat = unique_catalogue()
    spec = cat.by_alias["device_meter"]
    sample = SAMPLES / f"{Catalogue.build().by_alias['device_meter'].topic}.json"
    raw = sample.read_bytes()
    json.loads(raw)  # the sample is valid JSON
    create_topics(kafka_bootstrap, [spec.topic], partitions=1)
    [(part, off)] = produce(kafka_bootstrap, spec.topic, [raw])
    [rec] = consume_all(kafka_bootstrap, spec.topic, min_count=1)
    assert (rec.partition, rec.offset, rec.value) == (part, off, raw)


def test_large_message_round_trips(kafka_bootstrap: str) -> None:
    """Multi-station pushes can exceed Kafka's classic 1 MB default; the harness must carry them."""
    topic = f"smoke-big-{unique_suffix()}"
    create_topics(kafka_bootstrap, [topic], partitions=1)
    big = bytes(range(256)) * (3 * 4096)  # 3 MiB, every byte value
    [(part, off)] = produce(kafka_bootstrap, topic, [big])
    [rec] = consume_all(kafka_bootstrap, topic, min_count=1)
    assert (rec.offset, len(rec.value), rec.value == big) == (off, len(big), True)


def test_consumer_group_commits_and_a_new_member_resumes(kafka_bootstrap: str) -> None:
    """The ingester's pattern: subscribe in a group, commit after processing, resume after a restart."""
    from kafka import KafkaConsumer, TopicPartition

    topic, group = f"smoke-grp-{unique_suffix()}", f"g-{unique_suffix()}"
    create_topics(kafka_bootstrap, [topic], partitions=2)
    produce(kafka_bootstrap, topic, [b"a0", b"a1", b"a2"], partition=0)
    produce(kafka_bootstrap, topic, [b"b0", b"b1"], partition=1)

    def member() -> KafkaConsumer:
        return KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest", **CONSUMER_GROUP_TEST_SETTINGS)

    def drain(c: KafkaConsumer, n: int) -> list[bytes]:
        got: list[bytes] = []
        for _ in range(100):
            for recs in c.poll(timeout_ms=200).values():
                got += [r.value for r in recs]
            if len(got) >= n:
                break
        return got

    first = member()
    try:
        assert sorted(drain(first, 5)) == [b"a0", b"a1", b"a2", b"b0", b"b1"]
        first.commit()
        assert first.committed(TopicPartition(topic, 0)) == 3
        assert first.committed(TopicPartition(topic, 1)) == 2
    finally:
        first.close()

    produce(kafka_bootstrap, topic, [b"a3"], partition=0)
    second = member()
    try:
        assert drain(second, 1) == [b"a3"]
    finally:
        second.close()


def test_unique_catalogue_renames_every_topic_and_keeps_the_rest() -> None:
    base = Catalogue.build()
    a, b = unique_catalogue(), unique_catalogue()
    assert [t.alias for t in a.topics] == [t.alias for t in base.topics]
    assert set(a.by_topic).isdisjoint(base.by_topic)
    assert set(a.by_topic).isdisjoint(b.by_topic)
    for t in base.topics:
        renamed = a.by_alias[t.alias]
        assert renamed.topic.startswith(t.topic + "-")
        assert (renamed.kind, renamed.window_size, renamed.envelope) == (t.kind, t.window_size, t.envelope)
    for m in a.modules:
        assert m.output_topic == a.by_alias[m.name].topic
    fixed = unique_catalogue("abc")
    assert all(t.topic.endswith("-abc") for t in fixed.topics)


def test_catalogue_topics_are_created(kafka_bootstrap: str) -> None:
    cat = unique_catalogue()
    names = create_catalogue_topics(kafka_bootstrap, cat, partitions=2)
    assert names == [t.topic for t in cat.topics]
    create_catalogue_topics(kafka_bootstrap, cat, partitions=2)  # idempotent
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        listed = c.topics()
        assert set(names) <= listed
        assert c.partitions_for_topic(names[0]) == {0, 1}
    finally:
        c.close()


def test_kafka_python_uses_the_c_crc32c() -> None:
    assert crc32c_accelerated(), "install crc32c: kafka-python falls back to a slow pure-Python CRC"


def test_redis_client_round_trip_and_flush(redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0
    pipe = redis_client.pipeline()
    pipe.set("sf:smoke", b"\x00\xffbytes")
    pipe.hset("sf:h", mapping={"a": 1, "b": "two"})
    pipe.get("sf:smoke")
    pipe.hgetall("sf:h")
    assert pipe.execute() == [True, 2, b"\x00\xffbytes", {b"a": b"1", b"b": b"two"}]
    port = redis_client.connection_pool.connection_kwargs["port"]
    assert port != 6379


def test_redis_client_starts_empty_again(redis_client: redis.Redis) -> None:
    """Runs after the previous test: the fixture's FLUSHALL left nothing behind."""
    assert redis_client.keys("*") == []
    assert redis_client.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, "sf:n", 41) == 41


def test_fake_redis_runs_lua(fake_redis) -> None:
    fake_redis.set("k", "5")
    assert fake_redis.eval("return tonumber(redis.call('GET', KEYS[1])) * 2", 1, "k") == 10


def test_password_protected_redis_rejects_a_wrong_password() -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from store.connection import StoreAuthError, connect

    no_retry = Retry(NoBackoff(), 0)  # redis-py retries AuthenticationError (a ConnectionError) by default
    with start_redis(password="s3cret") as server:
        assert server.url == f"redis://:s3cret@127.0.0.1:{server.port}/0"
        good = redis.Redis.from_url(server.url)
        assert good.set("x", b"1") is True
        assert good.get("x") == b"1"
        good.close()

        wrong = redis.Redis(host="127.0.0.1", port=server.port, password="nope", retry=no_retry)
        with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
            wrong.ping()
        anonymous = redis.Redis(host="127.0.0.1", port=server.port, retry=no_retry)
        with pytest.raises(redis.AuthenticationError, match="(?i)authenticat"):
            anonymous.get("x")

        # the production connection path names the server and hides the password
        bad_url = f"redis://:nope@127.0.0.1:{server.port}/0"
        with pytest.raises(StoreAuthError, match=rf"authentication failed for redis://:\*\*\*@127.0.0.1:{server.port}/0"):
            connect(bad_url, retries=0)
        assert connect(server.url, retries=0).get("x") == b"1"
        pid = server.pid
    assert server.pid is None and not server.running
    assert pid is not None


def test_persistent_redis_keeps_data_across_restart(tmp_path: Path) -> None:
    server = start_redis(dir=tmp_path, appendonly=True)
    try:
        port = server.port
        c = server.client()
        c.rpush("sf:l", b"a", b"b", b"c")
        c.close()
        server.stop()
        assert not server.running
        server.start()
        assert server.port == port
        c = server.client()
        assert c.lrange("sf:l", 0, -1) == [b"a", b"b", b"c"]
        c.close()
    finally:
        server.close()
    assert tmp_path.exists(), "a caller-provided dir is never deleted"


@pytest.mark.parametrize("listening", [True, False], ids=["listening", "bound-only"])
@pytest.mark.parametrize("which", ["redis", "broker"])
def test_starting_on_a_taken_port_fails_with_the_reason(which: str, listening: bool) -> None:
    """A clash is reported as such (from our pre-check or the server's own log), never as a hang."""
    import socket

    from stationflow.local import LocalServerError, start_broker

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        if listening:
            taken.listen()
        port = taken.getsockname()[1]
        start = start_redis if which == "redis" else start_broker
        with pytest.raises(LocalServerError, match=rf"(?s){port}.*(Address already in use|AddrInUse)"):
            start(port=port, timeout=20)


def test_private_redis_survives_a_crash_with_its_data(private_redis) -> None:
    c = private_redis.client()
    c.hset("sf:{S1}:meta", mapping={"SCHEDULE-DEVICE-METER:0": 41})
    c.hset("sf:{S1}:meta", "SCHEDULE-DEVICE-METER:1", 7)
    assert c.config_get("appendfsync") == {"appendfsync": "always"}
    c.close()
    port = private_redis.port
    private_redis.kill()
    assert not private_redis.running
    private_redis.start()
    c = private_redis.client()
    assert private_redis.port == port
    assert c.hgetall("sf:{S1}:meta") == {b"SCHEDULE-DEVICE-METER:0": b"41", b"SCHEDULE-DEVICE-METER:1": b"7"}
    c.close()


def test_private_broker_restart_keeps_the_port_and_loses_the_data(private_broker) -> None:
    topic = f"smoke-restart-{unique_suffix()}"
    create_topics(private_broker.bootstrap, [topic], partitions=1)
    assert produce(private_broker.bootstrap, topic, [b"before"]) == [(0, 0)]
    bootstrap = private_broker.bootstrap
    private_broker.restart()
    assert private_broker.bootstrap == bootstrap and private_broker.running
    create_topics(private_broker.bootstrap, [topic], partitions=1)
    assert produce(private_broker.bootstrap, topic, [b"after"]) == [(0, 0)]
    assert [r.value for r in consume_all(private_broker.bootstrap, topic, min_count=1)] == [b"after"]


@pytest.mark.skipif(shutil.which("setpriv") is None or not sys.platform.startswith("linux"),
                    reason="needs Linux and setpriv (util-linux)")
def test_servers_die_with_a_killed_owner() -> None:
    """SIGKILL skips atexit; the parent-death signal still takes the servers down."""
    import os
    import signal
    import subprocess

    from stationflow.local import wait_for

    code = ("import os, sys\n"
            "from stationflow.local import start_broker, start_redis\n"
            "b = start_broker(); r = start_redis()\n"
            "print(b.pid, r.pid, flush=True)\n"
            "sys.stdin.read()\n")
    owner = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) == 2
        for pid in pids:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            assert b"tansu" in argv0 or b"redis-server" in argv0, argv0  # the server itself, not a wrapper
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)

        def gone(pid: int) -> bool:
            try:
                return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
            except OSError:
                return True

        for pid in pids:
            wait_for(lambda p=pid: gone(p), 10, f"server {pid} to die with its owner")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(5)
