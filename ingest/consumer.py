"""Building the group consumer: same client settings as a bare kafka-python consumer, plus
the group features the broker actually supports.

Static membership (`group_instance_id`, JoinGroup v5+, Kafka 2.3+) lets a restarted
ingester take its partitions back without a rebalance; the cooperative-sticky assignor
moves only the partitions that must move. Both are used only when the broker advertises
what they need; otherwise the consumer falls back to the defaults (eager range/round-robin,
dynamic membership) and says so once in the log.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: JoinGroup API key and the first version carrying group.instance.id (KIP-345)
_JOIN_GROUP_KEY = 11
_STATIC_MEMBERSHIP_JOIN_VERSION = 5


@dataclass(frozen=True)
class GroupFeatures:
    broker_version: tuple[int, ...] | None
    static_membership: bool
    cooperative: bool


def _connection_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The connection/security part of a consumer config (no group), for the probe."""
    from kafka import KafkaConsumer

    drop = {"group_id", "group_instance_id", "partition_assignment_strategy", "enable_auto_commit",
            "auto_offset_reset", "max_poll_records", "max_poll_interval_ms", "session_timeout_ms",
            "heartbeat_interval_ms"}
    return {k: v for k, v in cfg.items() if k in KafkaConsumer.DEFAULT_CONFIG and k not in drop}


def probe_group_features(cfg: Mapping[str, Any], timeout_ms: int = 10000) -> GroupFeatures:
    """Ask the broker which API versions it speaks (one short-lived connection)."""
    from kafka import KafkaConsumer

    probe = KafkaConsumer(**_connection_config(cfg), bootstrap_timeout_ms=timeout_ms)
    try:
        version = probe.config.get("api_version")
        api_versions = None
        manager = getattr(getattr(probe, "_client", None), "_manager", None)
        bvd = getattr(manager, "broker_version_data", None)
        if bvd is not None:
            api_versions = getattr(bvd, "api_versions", None)
    finally:
        probe.close()
    return features_from_versions(version, api_versions)


def features_from_versions(version: tuple[int, ...] | None,
                           api_versions: Mapping[int, tuple[int, int]] | None) -> GroupFeatures:
    """Decide from the advertised JoinGroup range when known, else from the broker version."""
    if api_versions is not None:
        join = api_versions.get(_JOIN_GROUP_KEY)
        static = join is not None and join[1] >= _STATIC_MEMBERSHIP_JOIN_VERSION
    else:
        static = version is not None and tuple(version) >= (2, 3)
    # KIP-429 needs nothing from the broker beyond passing protocol metadata through, but
    # brokers older than 2.4 predate it and were never tested with it: keep them eager.
    cooperative = version is not None and tuple(version) >= (2, 4)
    return GroupFeatures(tuple(version) if version else None, static, cooperative)


def default_instance_id() -> str:
    """Stable across restarts of the same process slot (host + $STATIONFLOW_INSTANCE or pid)."""
    slot = os.environ.get("STATIONFLOW_INSTANCE") or str(os.getpid())
    return f"{socket.gethostname()}-{slot}"


def consumer_config(
    base: Mapping[str, Any],
    features: GroupFeatures,
    *,
    group_id: str | None = None,
    instance_id: str | None = None,
    from_beginning: bool = False,
) -> dict[str, Any]:
    """The kwargs for KafkaConsumer: `base` (settings) with the group options applied."""
    cfg = dict(base)
    cfg["enable_auto_commit"] = False  # spec §6.8, whatever the configuration says
    if group_id:
        cfg["group_id"] = group_id
    if from_beginning:
        cfg["auto_offset_reset"] = "earliest"
    else:
        cfg.setdefault("auto_offset_reset", "earliest")
    if features.static_membership and instance_id:
        cfg["group_instance_id"] = instance_id
    else:
        cfg.pop("group_instance_id", None)
    if features.cooperative:
        from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor

        cfg["partition_assignment_strategy"] = (CooperativeStickyAssignor,)
    return cfg


def build_consumer(
    base: Mapping[str, Any],
    topics: Iterable[str],
    listener: Any,
    *,
    group_id: str | None = None,
    instance_id: str | None = None,
    from_beginning: bool = False,
    features: GroupFeatures | None = None,
) -> tuple[Any, GroupFeatures]:
    """A subscribed KafkaConsumer and the features it uses."""
    from kafka import KafkaConsumer

    if features is None:
        features = probe_group_features(base)
    cfg = consumer_config(base, features, group_id=group_id, instance_id=instance_id,
                          from_beginning=from_beginning)
    log.info("kafka broker %s: static membership %s, assignor %s",
             ".".join(map(str, features.broker_version or ())) or "unknown",
             f"on ({cfg['group_instance_id']})" if "group_instance_id" in cfg else "off",
             "cooperative-sticky" if features.cooperative else "default (eager)")
    consumer = KafkaConsumer(**cfg)
    consumer.subscribe(topics=list(topics), listener=listener)
    return consumer, features
