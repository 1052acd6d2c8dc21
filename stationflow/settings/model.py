"""The frozen settings objects every stationflow process reads.

Built only by `stationflow.settings.loading` (through `Settings.load` / `Settings.from_dict`),
so every instance has passed validation. `to_dict` writes the effective configuration back
as TOML-ready data that loads into equal settings; secrets are masked unless asked not to.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from parsers.catalogue import Catalogue, ModuleSpec, TopicSpec
from stationflow.settings.schema import (
    GLOBAL_KEYS,
    KAFKA_CONSUMER_KEYS,
    KAFKA_PRODUCER_KEYS,
    KAFKA_SHARED_KEYS,
    MASK,
    REDIS_KEYS,
)
from stationflow.settings.toml import dump_toml
from stationflow.settings.values import mask_url
from stationflow.settings.values import masked as masked_values


@dataclass(frozen=True)
class RedisSettings:
    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    socket_timeout: float = 10.0
    connect_timeout: float = 5.0
    health_check_interval: float = 30.0
    index_buckets: int = 0
    sentinels: tuple[str, ...] = ()
    sentinel_service: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True

    def connection_url(self) -> str:
        """The URL to connect with: `url`, or a (redis|rediss)+sentinel:// URL built from
        `sentinels` and `sentinel_service`, keeping the credentials, TLS and db of `url`."""
        if not self.sentinels:
            return self.url
        m = re.match(r"^([a-z+]+)://(?:([^@/]*)@)?[^/]*(?:/(\d+))?", self.url)
        tls = bool(m and m.group(1).startswith("rediss"))
        auth = f"{m.group(2)}@" if m and m.group(2) else ""
        db = m.group(3) if m and m.group(3) else "0"
        scheme = "rediss+sentinel" if tls else "redis+sentinel"
        return f"{scheme}://{auth}{','.join(self.sentinels)}/{self.sentinel_service}/{db}"

    def connect_options(self) -> dict[str, Any]:
        """Keyword options for `store.connection.connect()` (its parameter names)."""
        opts: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "connect_timeout": self.connect_timeout,
            "health_check_interval": self.health_check_interval,
        }
        if self.username is not None:
            opts["username"] = self.username
        if self.password is not None:
            opts["password"] = self.password
        if self.connection_url().split("://", 1)[0].startswith("rediss"):
            # redis-py's names; certificates are always verified (ssl_cert_reqs stays "required")
            opts["ssl_check_hostname"] = self.ssl_check_hostname
            for ours, theirs in (("ssl_cafile", "ssl_ca_certs"), ("ssl_certfile", "ssl_certfile"),
                                 ("ssl_keyfile", "ssl_keyfile")):
                if getattr(self, ours) is not None:
                    opts[theirs] = getattr(self, ours)
        return opts

    @property
    def is_cluster(self) -> bool:
        """State on Redis Cluster (redis+cluster:// or rediss+cluster://)."""
        return self.url.split("://", 1)[0] in ("redis+cluster", "rediss+cluster")

    def connect(self, **kw: Any) -> Any:
        """A checked client for this configuration (`store.connection.connect`: a redis.Redis,
        or a RedisCluster for a cluster URL; `kw` such as decode_responses or check=False pass
        through)."""
        from store.connection import connect

        client = connect(self.connection_url(), **{**self.connect_options(), **kw})
        if self.index_buckets:
            client.stationflow_index_buckets = self.index_buckets  # type: ignore[attr-defined]  # store.keys.keys_for
        return client

    def connect_queue(self, queue_url: str | None, **kw: Any) -> Any:
        """The plain Redis of the RQ queues: `queue_url` (queue.redis_url: its own credentials
        in the URL; the TLS files of [redis] apply to a rediss:// one), else this Redis."""
        if queue_url is None:
            return self.connect(**kw)
        from store.connection import connect

        opts = {k: v for k, v in self.connect_options().items() if k not in ("username", "password")}
        if not queue_url.split("://", 1)[0].startswith("rediss"):
            opts = {k: v for k, v in opts.items() if not k.startswith("ssl")}
        return connect(queue_url, **{**opts, **kw})

    def to_dict(self, masked: bool = True) -> dict[str, Any]:
        d = {k.name: getattr(self, k.name) for k in REDIS_KEYS}
        d["sentinels"] = list(self.sentinels)
        d = masked_values(REDIS_KEYS, d, masked)
        if masked:
            d["url"] = mask_url(self.url)
        return {k: v for k, v in d.items() if v is not None}

    def __repr__(self) -> str:
        return f"RedisSettings({self.to_dict(masked=True)!r})"


class ConsumerConfig(dict[str, Any]):
    """kwargs for kafka.KafkaConsumer that also carry the group policy (kafka.static_membership,
    kafka.assignor) as attributes: not as keys, so the dict can still be splatted into
    KafkaConsumer (which rejects unknown keys), while `ingest.consumer.build_consumer`, which
    gets this dict from the ingest service, applies them. Copies (`dict(cfg)`) drop them."""

    static_membership: str = "auto"
    assignor: str = "auto"


@dataclass(frozen=True)
class KafkaSettings:
    """Resolved kafka-python kwargs for the consumer and the producer, plus the group policy.

    Precedence per key: [kafka.consumer]/[kafka.producer] as written > [kafka] as written >
    section default > shared default.
    """

    consumer: Mapping[str, Any] = field(repr=False)
    producer: Mapping[str, Any] = field(repr=False)
    static_membership: str = "auto"
    assignor: str = "auto"

    @property
    def bootstrap_servers(self) -> str:
        return self.consumer["bootstrap_servers"]

    @property
    def group_id(self) -> str:
        return self.consumer["group_id"]

    @property
    def security_protocol(self) -> str:
        return self.consumer.get("security_protocol", "PLAINTEXT")

    def consumer_config(self) -> ConsumerConfig:
        """kwargs for kafka.KafkaConsumer (a fresh dict: callers may add deserializers), with
        the group policy attached (see ConsumerConfig)."""
        cfg = ConsumerConfig(self.consumer)
        cfg.static_membership = self.static_membership
        cfg.assignor = self.assignor
        return cfg

    def producer_config(self) -> dict[str, Any]:
        """kwargs for kafka.KafkaProducer (a fresh dict: callers may add serializers)."""
        return dict(self.producer)

    def admin_config(self) -> dict[str, Any]:
        """Connection kwargs shared by both clients, for KafkaAdminClient."""
        from kafka.admin import KafkaAdminClient

        return {k: v for k, v in self.consumer.items()
                if k in KafkaAdminClient.DEFAULT_CONFIG and self.producer.get(k, v) == v}

    def to_dict(self, masked: bool = True) -> dict[str, Any]:
        """[kafka] holds the keys both clients agree on; the sections hold the rest."""
        keys = KAFKA_SHARED_KEYS + KAFKA_CONSUMER_KEYS + KAFKA_PRODUCER_KEYS
        secret = {k.name for k in keys if k.secret}

        def show(k: str, v: Any) -> Any:
            if masked and k in secret and v is not None:
                return MASK
            if isinstance(v, tuple):
                return ".".join(map(str, v)) if k == "api_version" else list(v)
            return v

        shared = {k: show(k, v) for k, v in self.consumer.items()
                  if (k in self.producer and self.producer[k] == v) or k == "group_id"}
        cons = {k: show(k, v) for k, v in self.consumer.items() if k not in shared}
        prod = {k: show(k, v) for k, v in self.producer.items() if k not in shared}
        out: dict[str, Any] = dict(shared)
        out["static_membership"] = self.static_membership
        out["assignor"] = self.assignor
        out["consumer"] = cons
        out["producer"] = prod
        return out

    def __repr__(self) -> str:
        return f"KafkaSettings({self.to_dict(masked=True)!r})"


@dataclass(frozen=True)
class QueueSettings:
    name: str = "stationflow"
    redis_url: str | None = field(default=None, repr=False)
    high_water: int = 10000
    low_water: int = 5000
    job_ttl_s: int | None = None
    result_ttl_s: int = 60
    failure_ttl_s: int = 86400
    retries: int = 2
    group_size: int = 16


@dataclass(frozen=True)
class BatchSettings:
    sweep_interval_s: float = 1.0
    keep_s: float = 3600.0


@dataclass(frozen=True)
class IngestSettings:
    commit_interval_s: float = 1.0
    poll_timeout_ms: int = 1000
    summary_interval_s: float = 60.0


@dataclass(frozen=True)
class HooksSettings:
    result_handler: str | None = None
    batch_upload_handler: str | None = None


@dataclass(frozen=True)
class Settings:
    """Everything a stationflow process needs; build with `load()` or `from_dict()`."""

    prefix: str
    max_depth: int
    dlq_raw_max_bytes: int
    dlq_maxlen: int
    outputs_keep: int
    log_level: str
    redis: RedisSettings
    kafka: KafkaSettings
    queue: QueueSettings
    batch: BatchSettings
    ingest: IngestSettings
    hooks: HooksSettings
    catalogue: Catalogue = field(repr=False, compare=False)
    topic_overrides: Mapping[str, Mapping[str, Any]] = field(repr=False)
    module_overrides: Mapping[str, Mapping[str, Any]] = field(repr=False)
    source: str | None = None  # the TOML file read, if any
    env_applied: tuple[str, ...] = ()  # environment variables that overrode something

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None,
             env: Mapping[str, str] | None = None) -> Settings:
        """Defaults, then the TOML file (`path` or $STATIONFLOW_CONFIG), then the environment."""
        from stationflow.settings.loading import load

        return load(path, env)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None = None) -> Settings:
        """Validate a plain nested dict (the parsed TOML); never mutates it."""
        from stationflow.settings.loading import from_dict

        return from_dict(d)

    # ---- output -------------------------------------------------------------------------
    def to_dict(self, masked: bool = True, full: bool = False) -> dict[str, Any]:
        """The effective configuration as TOML-ready data (unset values left out).

        `full` also writes every topic and module with all its effective keys instead of only
        the overrides; either form loads back into equal settings.
        """
        out: dict[str, Any] = {k.name: getattr(self, k.name) for k in GLOBAL_KEYS}
        out["redis"] = self.redis.to_dict(masked)
        out["kafka"] = self.kafka.to_dict(masked)
        if full:
            out["topics"] = {t.alias: topic_to_dict(t) for t in self.catalogue.topics}
            out["modules"] = {m: module_to_dict(self.catalogue.by_module[m]) for m in self.catalogue.order}
        else:
            out["topics"] = plain(self.topic_overrides)
            out["modules"] = plain(self.module_overrides)
        for name, obj in (("queue", self.queue), ("batch", self.batch), ("ingest", self.ingest),
                          ("hooks", self.hooks)):
            out[name] = {k: v for k, v in vars(obj).items() if v is not None}
        if self.queue.redis_url is not None and masked:
            out["queue"]["redis_url"] = mask_url(self.queue.redis_url)
        return out

    def connect_queue(self, **kw: Any) -> Any:
        """The Redis of the RQ queues and registries (queue.redis_url, else redis.url)."""
        return self.redis.connect_queue(self.queue.redis_url, **kw)

    def to_toml(self, masked: bool = True, full: bool = False) -> str:
        return dump_toml(self.to_dict(masked=masked, full=full))


def plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, frozenset)):
        return [plain(x) for x in (sorted(v) if isinstance(v, frozenset) else v)]
    return v


def none_word(v: Any) -> Any:
    return "none" if v is None else v


def topic_to_dict(t: TopicSpec) -> dict[str, Any]:
    """A topic's configurable keys, as they would be written in [topics.<alias>]."""
    d: dict[str, Any] = {
        "topic": t.topic, "kind": t.kind, "window_size": t.window_size, "ttl_s": none_word(t.ttl_s),
        "retention_s": none_word(t.retention_s), "max_bytes": t.max_bytes, "fill": none_word(t.fill),
        "order_close_s": t.order_close_s,
    }
    if t.key_field is not None:
        d["key_field"] = t.key_field
    return d


def module_to_dict(m: ModuleSpec) -> dict[str, Any]:
    """A module's configurable keys, as they would be written in [modules.<name>]."""
    d: dict[str, Any] = {
        "runs": m.runs, "inputs": list(m.inputs), "deps": list(m.deps), "optional": sorted(m.optional),
        "triggers": "all" if m.triggers is None else list(m.triggers),
        "heartbeat_s": none_word(m.heartbeat_s), "batch_timeout_s": m.batch_timeout_s,
        "upload_empty": m.upload_empty, "layout": m.layout, "output_ttl_s": m.output_ttl_s,
        "run_timeout_s": m.run_timeout_s, "min_interval_s": m.min_interval_s,
    }
    if m.algorithm is not None:
        d["algorithm"] = m.algorithm
    return d


# ---------------------------------------------------------------------------------------
# section builders
# ---------------------------------------------------------------------------------------
