"""Offset book, backpressure gate, retry classification, backoff and consumer options."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import redis

from ingest.backpressure import QueueGate
from ingest.consumer import GroupFeatures, consumer_config, features_from_versions
from ingest.offsets import TP, OffsetBook, first_offsets, next_offsets
from ingest.retry import Backoff, is_kafka_outage, is_store_outage
from store.connection import StoreAuthError, StoreUnavailable


def rec(topic: str, partition: int, offset: int) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=partition, offset=offset)


def test_next_and_first_offsets_per_partition() -> None:
    rs = [rec("a", 0, 5), rec("a", 0, 7), rec("a", 1, 3), rec("b", 0, 10), rec("a", 0, 6)]
    assert next_offsets(rs) == {TP("a", 0): 8, TP("a", 1): 4, TP("b", 0): 11}
    assert first_offsets(rs) == {TP("a", 0): 5, TP("a", 1): 3, TP("b", 0): 10}


def test_offset_book_only_moves_forward_and_forgets_revoked() -> None:
    book = OffsetBook()
    book.mark_done({TP("a", 0): 8, TP("a", 1): 4})
    book.mark_done({TP("a", 0): 6})  # an older redelivery cannot pull the commit back
    assert book.pending() == {TP("a", 0): 8, TP("a", 1): 4}
    book.committed({TP("a", 0): 8})
    assert book.pending() == {TP("a", 1): 4}
    book.mark_done({TP("a", 0): 8})  # already committed: nothing to do
    assert book.pending() == {TP("a", 1): 4}
    assert book.pending(only=[TP("a", 0)]) == {}
    book.forget([TP("a", 1)])
    assert not book


def test_gate_has_hysteresis_and_counts_pauses() -> None:
    g = QueueGate(high_water=100, low_water=50)
    assert [g.update(d) for d in (10, 100, 101, 150, 80, 50, 49, 60, 101)] == \
        [None, None, True, None, None, None, False, None, True]
    assert g.pauses == 2 and g.paused


def test_gate_rejects_inverted_water_marks() -> None:
    with pytest.raises(ValueError, match="low_water"):
        QueueGate(high_water=10, low_water=10)


@pytest.mark.parametrize("exc, outage", [
    (redis.ConnectionError("refused"), True),
    (redis.TimeoutError("slow"), True),
    (redis.BusyLoadingError("loading"), True),
    (StoreUnavailable("down"), True),
    (redis.ResponseError("BUSY Redis is busy running a script"), True),
    (redis.ResponseError("READONLY You can't write against a read only replica."), True),
    (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
    (redis.AuthenticationError("invalid password"), False),
    (StoreAuthError("WRONGPASS"), False),
    (ValueError("bug"), False),
])
def test_store_outage_classification(exc: Exception, outage: bool) -> None:
    assert is_store_outage(exc) is outage


def test_kafka_outage_classification() -> None:
    from kafka import errors as ke

    assert is_kafka_outage(ke.KafkaConnectionError())
    assert is_kafka_outage(ke.KafkaTimeoutError())
    assert is_kafka_outage(ke.NotCoordinatorError())  # retriable
    assert not is_kafka_outage(ke.TopicAuthorizationFailedError())
    assert not is_kafka_outage(KeyError("x"))


def test_backoff_grows_is_capped_and_resets() -> None:
    b = Backoff(base_s=0.1, cap_s=10.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(12)]
    assert 0.05 <= delays[0] <= 0.1
    assert 0.1 <= delays[1] <= 0.2
    assert all(5.0 <= d <= 10.0 for d in delays[8:])  # capped, never a busy loop
    b.reset()
    assert b.next_delay() <= 0.1


def test_features_from_advertised_join_group_versions() -> None:
    assert features_from_versions((3, 9), {11: (0, 9)}) == GroupFeatures((3, 9), True, True)
    assert features_from_versions((2, 0), {11: (0, 3)}) == GroupFeatures((2, 0), False, False)
    assert features_from_versions((2, 3), None).static_membership
    assert not features_from_versions(None, None).static_membership


def test_consumer_config_applies_group_options_and_forces_manual_commit() -> None:
    base = {"bootstrap_servers": "h:9092", "group_id": "g", "enable_auto_commit": True,
            "auto_offset_reset": "latest", "max_poll_records": 500}
    on = consumer_config(base, GroupFeatures((3, 9), True, True), group_id="other", instance_id="i-1")
    assert on["enable_auto_commit"] is False
    assert on["group_id"] == "other" and on["group_instance_id"] == "i-1"
    assert on["auto_offset_reset"] == "latest"  # configured, and not --from-beginning
    assert on["partition_assignment_strategy"][0].name == "cooperative-sticky"
    assert on["max_poll_records"] == 500  # same client settings as a bare consumer
    off = consumer_config(base, GroupFeatures((2, 0), False, False), instance_id="i-1", from_beginning=True)
    assert "group_instance_id" not in off and "partition_assignment_strategy" not in off
    assert off["auto_offset_reset"] == "earliest" and off["group_id"] == "g"
    assert base["enable_auto_commit"] is True  # the settings' dict is not mutated
