"""Building the group consumer: same client settings as a bare kafka-python consumer, plus
the group features the broker actually supports.

Static membership (`group_instance_id`, JoinGroup v5+, Kafka 2.3+) lets a restarted
ingester take its partitions back without a rebalance; the cooperative-sticky assignor
moves only the partitions that must move. With the default settings (`kafka.static_membership`
and `kafka.assignor` = "auto") both are used only when the broker advertises what they need;
otherwise the consumer falls back to the defaults (eager range/round-robin, dynamic
membership) and says so once in the log. Operators can force either way.

Tansu and static membership: the bundled broker (Tansu 0.6) advertises JoinGroup v9 but its
group coordinator mishandles static members, and a SIGKILLed ingester that restarts can then
stall the group for ever (tests/faults/README.md). Two coordinator paths combine:

- a static member that rejoins with different subscription metadata (always the case after a
  restart with cooperative-sticky: its owned partitions changed; with range/roundrobin
  kafka-python writes the topic set in hash order, so it differs between processes too) moves
  the group back to "forming" *without* a new generation, keeping the old leader;
- dead members are evicted (session timeout) only while serving requests that carry no
  group.instance.id, so in an all-static group a dead leader is never evicted.

The leader of record is then the killed process (or a live one whose heartbeats at the
unchanged generation keep succeeding, so it never rejoins); nobody sends the leader's
SyncGroup, every JoinGroup answers the same generation and every SyncGroup fails with
REBALANCE_IN_PROGRESS. Dynamic membership takes neither path (metadata changes bump the
generation, every request evicts dead members, a restarted process is a new member). So
"auto" leaves static membership off on a broker that looks like Tansu: it advertises Fetch
v12+ (Kafka 2.7 level) but no OffsetForLeaderEpoch, which every Apache Kafka broker has
advertised since 0.11. The cooperative-sticky assignor is not involved (the same stall
happens with range; with dynamic membership both assignors recover).
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
#: the Tansu fingerprint (module docstring): Fetch at v12+ without OffsetForLeaderEpoch
_FETCH_KEY = 1
_OFFSET_FOR_LEADER_EPOCH_KEY = 23
_TANSU_NOTE = ("the broker looks like Tansu, whose coordinator can stall a group of static "
               "members after a crash")


@dataclass(frozen=True)
class GroupFeatures:
    """What the broker supports for our group. `static_membership` is false also when the
    broker advertises it but is known to mishandle it; `note` then says why."""

    broker_version: tuple[int, ...] | None
    static_membership: bool
    cooperative: bool
    note: str | None = None


def _connection_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The connection/security part of a consumer config (no group), for the probe."""
    from kafka import KafkaConsumer

    drop = {"group_id", "group_instance_id", "partition_assignment_strategy", "enable_auto_commit",
            "auto_offset_reset", "max_poll_records", "max_poll_interval_ms", "session_timeout_ms",
            "heartbeat_interval_ms"}
    return {k: v for k, v in cfg.items() if k in KafkaConsumer.DEFAULT_CONFIG and k not in drop}


def probe_group_features(cfg: Mapping[str, Any], timeout_ms: int = 10000) -> GroupFeatures:
    """Ask the broker which API versions it speaks (one short-lived admin connection, through
    kafka-python's public admin API: the cluster's first broker's version data)."""
    from kafka import KafkaAdminClient

    conn = {k: v for k, v in _connection_config(cfg).items() if k in KafkaAdminClient.DEFAULT_CONFIG}
    conn["bootstrap_timeout_ms"] = min(timeout_ms, int(conn.get("bootstrap_timeout_ms", timeout_ms)))
    admin = KafkaAdminClient(**conn)
    try:
        brokers = admin.describe_cluster().get("brokers") or []
        data = admin.get_broker_version_data(brokers[0]["broker_id"]) if brokers else None
    finally:
        admin.close()
    version = cfg.get("api_version") or (data.broker_version if data is not None else None)
    return features_from_versions(version, data.api_versions if data is not None else None)


def looks_like_tansu(api_versions: Mapping[int, tuple[int, int]] | None) -> bool:
    """Fetch v12+ advertised without OffsetForLeaderEpoch: not an Apache Kafka broker (those
    have advertised OffsetForLeaderEpoch since 0.11, years before Fetch v12 in 2.7); in
    practice the bundled Tansu. A false positive only costs static membership."""
    if not api_versions:
        return False
    fetch = api_versions.get(_FETCH_KEY)
    return fetch is not None and fetch[1] >= 12 and _OFFSET_FOR_LEADER_EPOCH_KEY not in api_versions


def features_from_versions(version: tuple[int, ...] | None,
                           api_versions: Mapping[int, tuple[int, int]] | None) -> GroupFeatures:
    """Decide from the advertised JoinGroup range when known, else from the broker version."""
    note = None
    if api_versions is not None:
        join = api_versions.get(_JOIN_GROUP_KEY)
        static = join is not None and join[1] >= _STATIC_MEMBERSHIP_JOIN_VERSION
        if static and looks_like_tansu(api_versions):
            static, note = False, _TANSU_NOTE
    else:
        static = version is not None and tuple(version) >= (2, 3)
    # KIP-429 needs nothing from the broker beyond passing protocol metadata through, but
    # brokers older than 2.4 predate it and were never tested with it: keep them eager.
    cooperative = version is not None and tuple(version) >= (2, 4)
    return GroupFeatures(tuple(version) if version else None, static, cooperative, note)


def _assignor_classes(name: str) -> tuple[Any, ...]:
    from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    by_name = {"cooperative-sticky": CooperativeStickyAssignor, "range": RangePartitionAssignor,
               "roundrobin": RoundRobinPartitionAssignor}
    try:
        return (by_name[name],)
    except KeyError:
        raise ValueError(f"kafka.assignor: unknown assignor {name!r}; "
                         f"one of auto, {', '.join(by_name)}") from None


@dataclass(frozen=True)
class GroupPolicy:
    """The group options in effect: the settings (`kafka.static_membership`, `kafka.assignor`)
    resolved against what the broker supports, with the reason, for the start-up log line."""

    static_membership: bool
    static_reason: str
    assignor: str | None  # None: kafka-python's default (range, then roundrobin)


def resolve_policy(features: GroupFeatures, static_membership: str = "auto",
                   assignor: str = "auto") -> GroupPolicy:
    """The "auto" values follow the broker (`features`); "on"/"off" and a named assignor are
    the operator's decision and win, also over a broker that looks like it cannot do it."""
    if static_membership == "on":
        static, why = True, "kafka.static_membership = on"
        if not features.static_membership:
            why += f" (although {features.note or 'the broker does not advertise JoinGroup v5+'})"
    elif static_membership == "off":
        static, why = False, "kafka.static_membership = off"
    elif static_membership == "auto":
        static = features.static_membership
        why = "auto: " + (features.note or ("the broker supports it" if static else
                                            "the broker does not advertise JoinGroup v5+"))
    else:
        raise ValueError(f"kafka.static_membership: {static_membership!r} is not auto, on or off")
    if assignor == "auto":
        name = "cooperative-sticky" if features.cooperative else None
    else:
        _assignor_classes(assignor)  # validates the name
        name = assignor
    return GroupPolicy(static, why, name)


def default_instance_id() -> str:
    """Stable across restarts of the same process slot (host + $STATIONFLOW_INSTANCE or pid)."""
    slot = os.environ.get("STATIONFLOW_INSTANCE") or str(os.getpid())
    return f"{socket.gethostname()}-{slot}"


def _policy_of(base: Mapping[str, Any], features: GroupFeatures, static_membership: str | None,
               assignor: str | None) -> GroupPolicy:
    # `base` is usually settings.kafka.consumer_config(), which carries the configured policy
    # as attributes (stationflow.settings.ConsumerConfig); explicit arguments win.
    return resolve_policy(
        features,
        static_membership if static_membership is not None else getattr(base, "static_membership", "auto"),
        assignor if assignor is not None else getattr(base, "assignor", "auto"),
    )


def consumer_config(
    base: Mapping[str, Any],
    features: GroupFeatures,
    *,
    group_id: str | None = None,
    instance_id: str | None = None,
    from_beginning: bool = False,
    static_membership: str | None = None,
    assignor: str | None = None,
) -> dict[str, Any]:
    """The kwargs for KafkaConsumer: `base` (settings) with the group options applied.

    `static_membership` ("auto", "on", "off") and `assignor` ("auto" or a name) default to
    the policy `base` carries (kafka.static_membership / kafka.assignor), else "auto"."""
    policy = _policy_of(base, features, static_membership, assignor)
    cfg = dict(base)
    cfg["enable_auto_commit"] = False  # spec §6.8, whatever the configuration says
    if group_id:
        cfg["group_id"] = group_id
    if from_beginning:
        cfg["auto_offset_reset"] = "earliest"
    else:
        cfg.setdefault("auto_offset_reset", "earliest")
    if policy.static_membership and instance_id:
        cfg["group_instance_id"] = instance_id
    else:
        cfg.pop("group_instance_id", None)
    if policy.assignor is not None:
        cfg["partition_assignment_strategy"] = _assignor_classes(policy.assignor)
    return cfg


def start_from_earliest_if_uncommitted(consumer: Any, partitions: Iterable[Any]) -> set[Any]:
    """Seek every partition the group has no committed offset for to its beginning (spec
    §6.9: slow topics load their last values whatever `auto_offset_reset` says); the
    partitions moved. Called from the polling thread: `committed` is a blocking request."""
    moved = set()
    for tp in partitions:
        if tp not in consumer.assignment():
            continue  # revoked since
        if consumer.committed(tp) is None:
            consumer.seek_to_beginning(tp)
            moved.add(tp)
    if moved:
        log.info("no committed offset: starting slow-topic partitions from the earliest offset: %s",
                 ", ".join(f"{t.topic}[{t.partition}]" for t in sorted(moved)))
    return moved


def slow_topics_needing_reset(cfg: Mapping[str, Any], slow: Iterable[str]) -> frozenset[str]:
    """The slow topics to check at assignment: all of them unless the consumer already
    starts every partition without a committed offset at the earliest one."""
    if str(cfg.get("auto_offset_reset", "earliest")) in ("earliest", "smallest"):
        return frozenset()
    return frozenset(slow)


def build_consumer(
    base: Mapping[str, Any],
    topics: Iterable[str],
    listener: Any,
    *,
    group_id: str | None = None,
    instance_id: str | None = None,
    from_beginning: bool = False,
    features: GroupFeatures | None = None,
    static_membership: str | None = None,
    assignor: str | None = None,
) -> tuple[Any, GroupFeatures]:
    """A subscribed KafkaConsumer and the features it uses (`static_membership`/`assignor`:
    see consumer_config)."""
    from kafka import KafkaConsumer

    if features is None:
        features = probe_group_features(base)
    policy = _policy_of(base, features, static_membership, assignor)
    cfg = consumer_config(base, features, group_id=group_id, instance_id=instance_id,
                          from_beginning=from_beginning, static_membership=static_membership,
                          assignor=assignor)
    log.info("kafka broker %s: static membership %s [%s], assignor %s",
             ".".join(map(str, features.broker_version or ())) or "unknown",
             f"on ({cfg['group_instance_id']})" if "group_instance_id" in cfg else "off",
             policy.static_reason, policy.assignor or "default (eager range/roundrobin)")
    consumer = KafkaConsumer(**cfg)
    consumer.subscribe(topics=list(topics), listener=listener)
    return consumer, features
