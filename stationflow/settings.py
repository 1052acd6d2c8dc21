"""One validated, frozen configuration object for every stationflow process.

Sources, later wins: built-in defaults, a TOML file (`path`, else $STATIONFLOW_CONFIG; no
file at all is fine), then the environment variables in `ENV_OVERRIDES`:

    STATIONFLOW_REDIS_URL                redis.url
    STATIONFLOW_REDIS_PASSWORD           redis.password
    STATIONFLOW_REDIS_SSL_CAFILE         redis.ssl_cafile
    STATIONFLOW_REDIS_SSL_CERTFILE       redis.ssl_certfile
    STATIONFLOW_REDIS_SSL_KEYFILE        redis.ssl_keyfile
    STATIONFLOW_KAFKA                    kafka.bootstrap_servers (comma list)
    STATIONFLOW_GROUP_ID                 kafka.group_id
    STATIONFLOW_KAFKA_SECURITY_PROTOCOL  kafka.security_protocol
    STATIONFLOW_KAFKA_SASL_MECHANISM     kafka.sasl_mechanism
    STATIONFLOW_KAFKA_SASL_USERNAME      kafka.sasl_plain_username
    STATIONFLOW_KAFKA_SASL_PASSWORD      kafka.sasl_plain_password
    STATIONFLOW_KAFKA_SSL_CAFILE         kafka.ssl_cafile
    STATIONFLOW_KAFKA_SSL_CERTFILE       kafka.ssl_certfile
    STATIONFLOW_KAFKA_SSL_KEYFILE        kafka.ssl_keyfile
    STATIONFLOW_KAFKA_SSL_PASSWORD       kafka.ssl_password
    STATIONFLOW_KAFKA_STATIC_MEMBERSHIP  kafka.static_membership
    STATIONFLOW_KAFKA_ASSIGNOR           kafka.assignor
    STATIONFLOW_PREFIX                   prefix
    STATIONFLOW_LOG_LEVEL                log_level
    STATIONFLOW_QUEUE_NAME               queue.name
    STATIONFLOW_QUEUE_HIGH_WATER         queue.high_water
    STATIONFLOW_QUEUE_LOW_WATER          queue.low_water
    STATIONFLOW_HOOKS_RESULT_HANDLER     hooks.result_handler
    STATIONFLOW_HOOKS_BATCH_UPLOAD_HANDLER  hooks.batch_upload_handler
    STATIONFLOW_MODULES                  [modules.<name>] keys, as a JSON object
                                         {"<module>": {"<key>": value, ...}, ...}

STATIONFLOW_MODULES exists so a parent process (stationflow.App) can hand the algorithms
registered in code to the ingesters and workers it starts without writing files; its keys
are merged over the TOML's [modules.<name>] tables key by key and validated like them.

An environment override of a [kafka] key also replaces the same key in [kafka.consumer] and
[kafka.producer], so the environment always wins. Empty variables are ignored.

Everything is checked at start-up (spec §6.10): unknown keys anywhere (with the closest valid
key suggested), wrong types, impossible combinations, missing SSL files, and the catalogue
overrides (unknown topics/modules, cycles, local modules depending on `off` ones). Secrets
never appear in repr/str or in `to_dict(masked=True)`.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from parsers.catalogue import (
    DEFAULT_MAX_BYTES,
    LAYOUTS,
    RUN_MODES,
    WINDOW_KINDS,
    Catalogue,
    CatalogueError,
    ModuleSpec,
    TopicSpec,
)

MASK = "***"


class ConfigError(ValueError):
    """A configuration that cannot work; the message names the key path (or env variable)."""


# ---------------------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, default and the one-line doc shown in the example.

    `type` is one of: str, int, float, bool, strlist, servers, acks, api_version, any.
    `nullable` keys may be unset; where `none_word` is true the TOML spelling of unset is
    the string "none" (TOML has no null).
    """

    name: str
    type: str
    default: Any
    doc: str
    choices: tuple[Any, ...] = ()
    secret: bool = False
    nullable: bool = False
    none_word: bool = False
    minimum: float | None = None
    example: Any = None  # shown commented out in the example file when the default is None


GLOBAL_KEYS: tuple[Key, ...] = (
    Key("prefix", "str", "sf", "prefix of every Redis key this deployment owns"),
    Key("max_depth", "int", 32, "deepest JSON nesting accepted before dead-lettering as too_deep", minimum=1),
    Key("dlq_raw_max_bytes", "int", 65536, "raw bytes kept per dead-letter entry", minimum=0),
    Key("dlq_maxlen", "int", 100000, "dead-letter stream cap (entries)", minimum=1),
    Key("outputs_keep", "int", 10, "stored outputs kept per (station, module)", minimum=1),
    Key("log_level", "str", "INFO", "root log level when the command line does not set one",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
)

REDIS_KEYS: tuple[Key, ...] = (
    Key("url", "str", "redis://127.0.0.1:6379/0",
        "redis://, rediss:// (TLS), unix:// or redis+sentinel://[user:pw@]host:port[,host:port]/service/db"),
    Key("username", "str", None, "ACL user name (or put it in the URL)", nullable=True, example="stationflow"),
    Key("password", "str", None, "password (or put it in the URL); masked in all output",
        secret=True, nullable=True, example="change-me"),
    Key("socket_timeout", "float", 10.0, "seconds a command may wait for a reply", minimum=0),
    Key("connect_timeout", "float", 5.0, "seconds to establish a connection", minimum=0),
    Key("health_check_interval", "float", 30.0, "seconds between PINGs on idle connections", minimum=0),
    Key("sentinels", "strlist", [], "Sentinel addresses host:port; when set, sentinel_service is required"),
    Key("sentinel_service", "str", None, "Sentinel master (service) name", nullable=True, example="mymaster"),
    Key("ssl_cafile", "str", None, "CA bundle (PEM) that signed the server certificate (rediss:// only; "
        "default: the system's)", nullable=True, example="/etc/stationflow/redis-ca.pem"),
    Key("ssl_certfile", "str", None, "client certificate (PEM) for mutual TLS (rediss:// only)",
        nullable=True, example="/etc/stationflow/redis-client.pem"),
    Key("ssl_keyfile", "str", None, "client private key (PEM) for mutual TLS (rediss:// only)",
        nullable=True, example="/etc/stationflow/redis-client.key"),
    Key("ssl_check_hostname", "bool", True, "verify that the server certificate matches the URL's host"),
)
REDIS_SSL_FILE_KEYS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
COMPRESSION_TYPES = ("gzip", "snappy", "lz4", "zstd")
SSL_FILE_KEYS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_crlfile")

KAFKA_SHARED_KEYS: tuple[Key, ...] = (
    Key("bootstrap_servers", "servers", "127.0.0.1:9092", "broker list: \"h1:9092,h2:9092\" or a list"),
    Key("client_id", "str", "stationflow", "client id reported to the brokers"),
    Key("group_id", "str", "stationflow", "consumer group of the ingesters (consumer only)"),
    Key("security_protocol", "str", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
        choices=SECURITY_PROTOCOLS),
    Key("sasl_mechanism", "str", None, "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_* protocols)",
        choices=SASL_MECHANISMS, nullable=True, example="SCRAM-SHA-512"),
    Key("sasl_plain_username", "str", None, "SASL user name", nullable=True, example="stationflow"),
    Key("sasl_plain_password", "str", None, "SASL password; masked in all output", secret=True,
        nullable=True, example="change-me"),
    Key("ssl_cafile", "str", None, "CA bundle (PEM) that signed the brokers' certificates",
        nullable=True, example="/etc/stationflow/ca.pem"),
    Key("ssl_certfile", "str", None, "client certificate (PEM) for mutual TLS", nullable=True,
        example="/etc/stationflow/client.pem"),
    Key("ssl_keyfile", "str", None, "client private key (PEM) for mutual TLS", nullable=True,
        example="/etc/stationflow/client.key"),
    Key("ssl_password", "str", None, "password of ssl_keyfile; masked in all output", secret=True,
        nullable=True, example="change-me"),
    Key("ssl_check_hostname", "bool", True, "verify that broker certificates match their host names"),
    Key("request_timeout_ms", "int", 30000, "client request timeout", minimum=1),
    Key("api_version", "api_version", None, "broker API version, e.g. \"3.0\"; unset = probe the broker",
        nullable=True, example="3.0"),
)

#: kafka.static_membership values: "auto" = on when the broker supports it (JoinGroup v5+,
#: Kafka 2.3+) and is not one known to mishandle it (the bundled Tansu, see ingest/consumer.py)
STATIC_MEMBERSHIP_MODES = ("auto", "on", "off")
#: kafka.assignor values: "auto" = cooperative-sticky on Kafka 2.4+ brokers, else kafka-python's
#: default (range, then roundrobin)
ASSIGNORS = ("auto", "cooperative-sticky", "range", "roundrobin")

#: How the ingesters join their consumer group. [kafka] only (not kafka-python options: they
#: never reach the client kwargs); `ingest.consumer.build_consumer` applies them.
KAFKA_GROUP_KEYS: tuple[Key, ...] = (
    Key("static_membership", "str", "auto",
        "group.instance.id per ingester: auto, on or off (off: a restart rebalances, but no broker "
        "bug with static members can stall the group)", choices=STATIC_MEMBERSHIP_MODES),
    Key("assignor", "str", "auto", "partition assignor: auto, cooperative-sticky, range or roundrobin",
        choices=ASSIGNORS),
)

KAFKA_CONSUMER_KEYS: tuple[Key, ...] = (
    Key("session_timeout_ms", "int", 45000, "group session timeout", minimum=1),
    Key("heartbeat_interval_ms", "int", 3000, "group heartbeat interval", minimum=1),
    Key("max_poll_records", "int", 10000, "records returned by one poll (one Redis pipeline; larger polls "
        "share the per-station presence, script and scheduling round trips over more records)", minimum=1),
    Key("max_poll_interval_ms", "int", 300000, "longest gap between polls before the group evicts us",
        minimum=1),
    Key("fetch_max_bytes", "int", 52428800, "bytes per fetch response", minimum=1),
    Key("max_partition_fetch_bytes", "int", 1048576, "bytes per partition per fetch", minimum=1),
    Key("auto_offset_reset", "str", "earliest", "where a new group starts: earliest or latest",
        choices=("earliest", "latest")),
    Key("enable_auto_commit", "bool", False,
        "must stay false: offsets are committed only after the Redis writes (spec 6.8)"),
)

KAFKA_PRODUCER_KEYS: tuple[Key, ...] = (
    Key("acks", "acks", "all", "acknowledgements: \"all\", 1 or 0 (idempotence needs \"all\")"),
    Key("retries", "int", 2147483647, "send retries (bounded by delivery_timeout_ms)", minimum=0),
    Key("delivery_timeout_ms", "int", 120000, "upper bound on a send including retries", minimum=1),
    Key("linger_ms", "int", 5, "wait this long to fill a batch", minimum=0),
    Key("batch_size", "int", 16384, "bytes per partition batch", minimum=0),
    Key("max_request_size", "int", DEFAULT_MAX_BYTES["module_output"],
        "largest upload (brokers' message.max.bytes must allow it)", minimum=1),
    Key("compression_type", "str", None, "gzip, snappy, lz4 or zstd (its codec must be installed)",
        choices=COMPRESSION_TYPES, nullable=True, example="gzip"),
    Key("enable_idempotence", "bool", True, "no duplicates from producer retries"),
    Key("max_in_flight_requests_per_connection", "int", 5, "at most 5 with idempotence", minimum=1),
)

TOPIC_KEYS: tuple[Key, ...] = (
    Key("kind", "str", None, "window kind", choices=WINDOW_KINDS),
    Key("window_size", "int", None, "cap: items, hours, closed seconds, devices or dates", minimum=1),
    Key("ttl_s", "float", None, "freshness horizon (\"none\" = valid until replaced)", nullable=True,
        none_word=True, minimum=0),
    Key("retention_s", "float", None, "how long Redis keeps the window (\"none\" = for ever)",
        nullable=True, none_word=True, minimum=0),
    Key("max_bytes", "int", None, "larger values are dead-lettered as too_large", minimum=1),
    Key("fill", "float", None, "hourly gap fill (\"none\" = null)", nullable=True, none_word=True),
    Key("order_close_s", "float", None, "orders: wall-clock close of the open second", minimum=0),
    Key("key_field", "str", None, "devices/hourly/global: the upsert key field"),
    Key("topic", "str", None, "Kafka topic name, for deployments that rename topics"),
)

MODULE_KEYS: tuple[Key, ...] = (
    Key("runs", "str", None, "local (we run it), external (we ingest its output topic) or off",
        choices=RUN_MODES),
    Key("inputs", "strlist", None, "input topic aliases, in flat-layout order"),
    Key("deps", "strlist", None, "upstream modules whose latest output is an input"),
    Key("optional", "strlist", None, "inputs/deps that may be absent"),
    Key("triggers", "strlist", None, "inputs/deps whose new data runs the module (\"all\" = every one)",
        nullable=True),
    Key("algorithm", "str", None, "dotted path of the function: \"pkg.mod:fn\""),
    Key("heartbeat_s", "float", None, "run every ready station this often (\"none\" = only on new data)",
        nullable=True, none_word=True, minimum=0),
    Key("batch_timeout_s", "float", None, "a batch uploads at the latest this long after creation",
        minimum=0),
    Key("upload_empty", "bool", None, "upload batches without any ok result"),
    Key("layout", "str", None, "module input layout", choices=LAYOUTS),
    Key("output_ttl_s", "float", None, "freshness of the module's stored output", minimum=0),
    Key("run_timeout_s", "float", None, "a run taking longer fails with reason timeout", minimum=0),
)

QUEUE_KEYS: tuple[Key, ...] = (
    Key("name", "str", "stationflow", "RQ queue of station jobs"),
    Key("high_water", "int", 10000, "ingesters pause fetching above this queue depth", minimum=1),
    Key("low_water", "int", 5000, "and resume below this one", minimum=0),
    Key("job_ttl_s", "int", None, "seconds a queued job may wait before RQ drops it (unset = for ever)",
        nullable=True, minimum=1, example=600),
    Key("result_ttl_s", "int", 60, "seconds RQ keeps a finished job", minimum=0),
    Key("failure_ttl_s", "int", 86400, "seconds RQ keeps a failed job", minimum=0),
    Key("retries", "int", 2, "RQ retries of a job that crashed its worker", minimum=0),
)

BATCH_KEYS: tuple[Key, ...] = (
    Key("sweep_interval_s", "float", 1.0, "how often expired batches and lost runs are swept", minimum=0.01),
)

INGEST_KEYS: tuple[Key, ...] = (
    Key("commit_interval_s", "float", 1.0, "group offset commits at most this often", minimum=0),
    Key("poll_timeout_ms", "int", 1000, "longest wait of one poll", minimum=0),
    Key("summary_interval_s", "float", 60.0, "log a throughput summary this often (0 = never)", minimum=0),
)

HOOKS_KEYS: tuple[Key, ...] = (
    Key("result_handler", "str", None, "called with every stored result: \"pkg.mod:fn\"", nullable=True,
        example="myhooks:on_result"),
    Key("batch_upload_handler", "str", None, "called with every uploaded batch: \"pkg.mod:fn\"",
        nullable=True, example="myhooks:on_batch"),
)

#: table path -> keys; the example file and `config check` are generated from/checked against it
SECTIONS: dict[str, tuple[Key, ...]] = {
    "": GLOBAL_KEYS,
    "redis": REDIS_KEYS,
    "kafka": KAFKA_SHARED_KEYS + KAFKA_GROUP_KEYS,
    "kafka.consumer": KAFKA_CONSUMER_KEYS,
    "kafka.producer": KAFKA_PRODUCER_KEYS,
    "topics.<alias>": TOPIC_KEYS,
    "modules.<name>": MODULE_KEYS,
    "queue": QUEUE_KEYS,
    "batch": BATCH_KEYS,
    "ingest": INGEST_KEYS,
    "hooks": HOOKS_KEYS,
}
TOP_LEVEL_TABLES = ("redis", "kafka", "topics", "modules", "queue", "batch", "ingest", "hooks")


@dataclass(frozen=True)
class EnvOverride:
    var: str
    path: tuple[str, ...]
    doc: str


ENV_OVERRIDES: tuple[EnvOverride, ...] = (
    EnvOverride("STATIONFLOW_REDIS_URL", ("redis", "url"), "Redis URL"),
    EnvOverride("STATIONFLOW_REDIS_PASSWORD", ("redis", "password"), "Redis password"),
    EnvOverride("STATIONFLOW_REDIS_SSL_CAFILE", ("redis", "ssl_cafile"), "Redis CA bundle (rediss://)"),
    EnvOverride("STATIONFLOW_REDIS_SSL_CERTFILE", ("redis", "ssl_certfile"), "Redis client certificate"),
    EnvOverride("STATIONFLOW_REDIS_SSL_KEYFILE", ("redis", "ssl_keyfile"), "Redis client key"),
    EnvOverride("STATIONFLOW_KAFKA", ("kafka", "bootstrap_servers"), "Kafka bootstrap servers, comma list"),
    EnvOverride("STATIONFLOW_GROUP_ID", ("kafka", "group_id"), "consumer group id"),
    EnvOverride("STATIONFLOW_KAFKA_SECURITY_PROTOCOL", ("kafka", "security_protocol"), "Kafka security protocol"),
    EnvOverride("STATIONFLOW_KAFKA_SASL_MECHANISM", ("kafka", "sasl_mechanism"), "SASL mechanism"),
    EnvOverride("STATIONFLOW_KAFKA_SASL_USERNAME", ("kafka", "sasl_plain_username"), "SASL user name"),
    EnvOverride("STATIONFLOW_KAFKA_SASL_PASSWORD", ("kafka", "sasl_plain_password"), "SASL password"),
    EnvOverride("STATIONFLOW_KAFKA_SSL_CAFILE", ("kafka", "ssl_cafile"), "CA bundle"),
    EnvOverride("STATIONFLOW_KAFKA_SSL_CERTFILE", ("kafka", "ssl_certfile"), "client certificate"),
    EnvOverride("STATIONFLOW_KAFKA_SSL_KEYFILE", ("kafka", "ssl_keyfile"), "client key"),
    EnvOverride("STATIONFLOW_KAFKA_SSL_PASSWORD", ("kafka", "ssl_password"), "client key password"),
    EnvOverride("STATIONFLOW_KAFKA_STATIC_MEMBERSHIP", ("kafka", "static_membership"),
                "static group membership: auto, on or off"),
    EnvOverride("STATIONFLOW_KAFKA_ASSIGNOR", ("kafka", "assignor"),
                "partition assignor: auto, cooperative-sticky, range or roundrobin"),
    EnvOverride("STATIONFLOW_PREFIX", ("prefix",), "Redis key prefix"),
    EnvOverride("STATIONFLOW_LOG_LEVEL", ("log_level",), "log level"),
    EnvOverride("STATIONFLOW_QUEUE_NAME", ("queue", "name"), "RQ queue name"),
    EnvOverride("STATIONFLOW_QUEUE_HIGH_WATER", ("queue", "high_water"), "queue depth that pauses fetching"),
    EnvOverride("STATIONFLOW_QUEUE_LOW_WATER", ("queue", "low_water"), "queue depth that resumes fetching"),
    EnvOverride("STATIONFLOW_HOOKS_RESULT_HANDLER", ("hooks", "result_handler"), "result hook, \"pkg.mod:fn\""),
    EnvOverride("STATIONFLOW_HOOKS_BATCH_UPLOAD_HANDLER", ("hooks", "batch_upload_handler"),
                "batch upload hook, \"pkg.mod:fn\""),
    EnvOverride("STATIONFLOW_MODULES", ("modules",), "module keys as JSON: {\"<module>\": {\"<key>\": value}}"),
)


# ---------------------------------------------------------------------------------------
# kafka-python key sets (imported lazily: kafka is heavy and not every command needs it)
# ---------------------------------------------------------------------------------------

#: kafka-python keys that take Python objects: not expressible in TOML
_OBJECT_KEYS = frozenset({
    "kafka_client", "selector", "key_deserializer", "value_deserializer", "key_serializer",
    "value_serializer", "partitioner", "partition_assignment_strategy", "default_offset_commit_callback",
    "ssl_context", "sasl_oauth_token_provider", "socket_options", "metric_reporters",
})
#: types of kafka-python keys whose default (None, inf) does not tell
_PASS_THROUGH_TYPES = {
    "receive_buffer_bytes": "int", "send_buffer_bytes": "int", "consumer_timeout_ms": "int",
    "retries": "int", "transactional_id": "str", "group_instance_id": "str", "proxy_url": "str",
    "socks5_proxy": "str", "ssl_ciphers": "str", "ssl_crlfile": "str", "sasl_kerberos_name": "str",
    "sasl_kerberos_domain_name": "str",
}


@lru_cache(maxsize=1)
def _kafka_key_sets() -> tuple[dict[str, Key], dict[str, Key]]:
    """Keys accepted by the consumer and by the producer: ours plus kafka-python's own."""
    from kafka import KafkaConsumer, KafkaProducer

    ours = {k.name: k for k in KAFKA_SHARED_KEYS + KAFKA_CONSUMER_KEYS + KAFKA_PRODUCER_KEYS}

    def keys(defaults: Mapping[str, Any], own: tuple[Key, ...]) -> dict[str, Key]:
        out: dict[str, Key] = {}
        for name, default in defaults.items():
            if name in ours:
                out[name] = ours[name]
                continue
            t = _PASS_THROUGH_TYPES.get(name)
            if t is None:
                if isinstance(default, bool):
                    t = "bool"
                elif isinstance(default, int):
                    t = "int"
                elif isinstance(default, float):
                    t = "float"
                elif isinstance(default, str):
                    t = "str"
                elif default is None and name not in _OBJECT_KEYS:
                    t = "any"
                else:
                    t = "object"
            if name in _OBJECT_KEYS:
                t = "object"
            out[name] = Key(name, t, None, "kafka-python option", nullable=True)
        for k in own:
            out[k.name] = k
        return out

    cons = keys(KafkaConsumer.DEFAULT_CONFIG, KAFKA_CONSUMER_KEYS)
    prod = keys(KafkaProducer.DEFAULT_CONFIG, KAFKA_PRODUCER_KEYS)
    return cons, prod


# ---------------------------------------------------------------------------------------
# value checks
# ---------------------------------------------------------------------------------------


def _tname(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(v), type(v).__name__)


def _hint(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "valid keys: " + ", ".join(sorted(choices)) if choices else "no keys allowed here"


def _unknown(path: str, key: str, valid: list[str]) -> ConfigError:
    full = f"{path}.{key}" if path else key
    return ConfigError(f"{full}: unknown key; {_hint(key, valid)}")


_TYPE_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "strlist": "an array of strings"}


def _check(path: str, key: Key, value: Any) -> Any:
    """Type-check and normalise one value; errors name `path` and never echo a secret."""
    shown = "" if key.secret else f" {value!r}"
    if value is None:
        if key.nullable or key.default is None:
            return None
        raise ConfigError(f"{path}: may not be empty")
    if key.none_word and isinstance(value, str) and value.lower() in ("none", "null"):
        return None
    t = key.type
    if t == "object":
        raise ConfigError(f"{path}: takes a Python object and cannot be set from configuration")
    if t == "any":
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigError(f"{path}: expected a string, number or boolean, got {_tname(value)}{shown}")
    elif t == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_tname(value)}{shown}")
    elif t == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_tname(value)}{shown}")
    elif t == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {_tname(value)}{shown}")
        if math.isnan(value):
            raise ConfigError(f"{path}: expected a number, got nan")
        value = float(value)
    elif t == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_tname(value)}{shown}")
    elif t == "strlist":
        if key.name == "triggers" and value == "all":
            return None
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
            raise ConfigError(f"{path}: expected an array of strings, got {_tname(value)}{shown}")
        value = list(value)
    elif t == "servers":
        value = _servers(path, value)
    elif t == "acks":
        if value == "all" or value == -1:
            value = "all"
        elif isinstance(value, bool) or value not in (0, 1):
            raise ConfigError(f"{path}: expected \"all\", 1 or 0, got {_tname(value)}{shown}")
    elif t == "api_version":
        value = _api_version(path, value)
    if key.choices and value not in key.choices:
        raise ConfigError(
            f"{path}: must be one of {', '.join(map(str, key.choices))}, got {value!r}"
            + _close_suffix(str(value), [str(c) for c in key.choices])
        )
    if key.minimum is not None and isinstance(value, (int, float)) and value < key.minimum:
        raise ConfigError(f"{path}: must be >= {key.minimum:g}, got {value!r}")
    return value


def _close_suffix(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:\d{1,5})?$")


def _servers(path: str, value: Any) -> str:
    if isinstance(value, str):
        items = [s.strip() for s in value.split(",")]
    elif isinstance(value, (list, tuple)) and all(isinstance(s, str) for s in value):
        items = [s.strip() for s in value]
    else:
        raise ConfigError(f"{path}: expected \"host:port,host:port\" or an array of strings, "
                          f"got {_tname(value)} {value!r}")
    if not items or any(not s for s in items):
        raise ConfigError(f"{path}: empty broker address in {value!r}")
    for s in items:
        if not _HOSTPORT.match(s):
            raise ConfigError(f"{path}: {s!r} is not host[:port]")
    return ",".join(items)


def _api_version(path: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+){0,2}", value):
        return tuple(int(x) for x in value.split("."))
    if (isinstance(value, (list, tuple)) and 1 <= len(value) <= 3
            and all(isinstance(x, int) and not isinstance(x, bool) for x in value)):
        return tuple(value)
    raise ConfigError(f"{path}: expected a version such as \"3.0\", got {_tname(value)} {value!r}")


def _table(path: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected a table, got {_tname(value)}")
    return dict(value)


def _section(path: str, raw: Any, keys: tuple[Key, ...], defaults: bool = True) -> dict[str, Any]:
    """Validate one flat table: unknown keys, types; fill in defaults."""
    raw = _table(path, raw)
    by_name = {k.name: k for k in keys}
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in by_name:
            raise _unknown(path, name, list(by_name))
        out[name] = _check(f"{path}.{name}" if path else name, by_name[name], value)
    if defaults:
        for k in keys:
            out.setdefault(k.name, copy.copy(k.default))
    return out


_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*([:.][A-Za-z_]\w*)$")
_KAFKA_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _check_dotted(path: str, value: str | None) -> None:
    if value is not None and not _DOTTED.match(value):
        raise ConfigError(f"{path}: {value!r} is not a dotted path such as \"package.module:function\"")


_URL_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^@/]*)@")


def mask_url(url: str) -> str:
    """The URL with the password of its user-info part replaced by ***."""
    m = _URL_USERINFO.match(url)
    if not m or ":" not in m.group(2):
        return url
    user = m.group(2).split(":", 1)[0]
    return f"{m.group(1)}{user}:{MASK}@{url[m.end():]}"


# ---------------------------------------------------------------------------------------
# the settings objects
# ---------------------------------------------------------------------------------------


def _masked(keys: tuple[Key, ...], values: Mapping[str, Any], masked: bool) -> dict[str, Any]:
    secret = {k.name for k in keys if k.secret}
    return {k: (MASK if masked and k in secret and v is not None else v) for k, v in values.items()}


@dataclass(frozen=True)
class RedisSettings:
    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    socket_timeout: float = 10.0
    connect_timeout: float = 5.0
    health_check_interval: float = 30.0
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

    def connect(self, **kw: Any) -> Any:
        """A checked redis.Redis for this configuration (`store.connection.connect`; `kw`
        such as decode_responses or check=False pass through)."""
        from store.connection import connect

        return connect(self.connection_url(), **{**self.connect_options(), **kw})

    def to_dict(self, masked: bool = True) -> dict[str, Any]:
        d = {k.name: getattr(self, k.name) for k in REDIS_KEYS}
        d["sentinels"] = list(self.sentinels)
        d = _masked(REDIS_KEYS, d, masked)
        if masked:
            d["url"] = mask_url(self.url)
        return {k: v for k, v in d.items() if v is not None}

    def __repr__(self) -> str:
        return f"RedisSettings({self.to_dict(masked=True)!r})"


class ConsumerConfig(dict):  # type: ignore[type-arg]
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
    def client_id(self) -> str:
        return self.consumer.get("client_id", "stationflow")

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
    high_water: int = 10000
    low_water: int = 5000
    job_ttl_s: int | None = None
    result_ttl_s: int = 60
    failure_ttl_s: int = 86400
    retries: int = 2


@dataclass(frozen=True)
class BatchSettings:
    sweep_interval_s: float = 1.0


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
        env = os.environ if env is None else env
        if path is None:
            path = env.get("STATIONFLOW_CONFIG") or None
        raw: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            try:
                with p.open("rb") as f:
                    raw = tomllib.load(f)
            except FileNotFoundError:
                raise ConfigError(f"config file not found: {p}") from None
            except IsADirectoryError:
                raise ConfigError(f"config file is a directory: {p}") from None
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{p}: invalid TOML: {e}") from None
        applied = _apply_env(raw, env)
        try:
            s = cls.from_dict(raw)
        except ConfigError as e:
            if path is not None:
                raise ConfigError(f"{path}: {e}") from None
            raise
        object.__setattr__(s, "source", None if path is None else str(path))
        object.__setattr__(s, "env_applied", applied)
        return s

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None = None) -> Settings:
        """Validate a plain nested dict (the parsed TOML); never mutates it."""
        d = copy.deepcopy(dict(d or {}))
        valid_top = [k.name for k in GLOBAL_KEYS] + list(TOP_LEVEL_TABLES)
        for k in d:
            if k not in valid_top:
                raise _unknown("", k, valid_top)
        top = _section("", {k: v for k, v in d.items() if k not in TOP_LEVEL_TABLES}, GLOBAL_KEYS)
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", top["prefix"]):
            raise ConfigError(f"prefix: {top['prefix']!r} must be non-empty without spaces, braces or quotes")
        redis = _redis(d.get("redis", {}))
        kafka = _kafka(d.get("kafka", {}))
        q = _section("queue", d.get("queue", {}), QUEUE_KEYS)
        if not q["name"]:
            raise ConfigError("queue.name: may not be empty")
        if q["low_water"] >= q["high_water"]:
            raise ConfigError(f"queue.low_water ({q['low_water']}) must be below queue.high_water "
                              f"({q['high_water']})")
        hooks = _section("hooks", d.get("hooks", {}), HOOKS_KEYS)
        for k, v in hooks.items():
            _check_dotted(f"hooks.{k}", v)
        topic_ov, module_ov, catalogue = _catalogue(d.get("topics", {}), d.get("modules", {}))
        return cls(
            **top,
            redis=redis,
            kafka=kafka,
            queue=QueueSettings(**q),
            batch=BatchSettings(**_section("batch", d.get("batch", {}), BATCH_KEYS)),
            ingest=IngestSettings(**_section("ingest", d.get("ingest", {}), INGEST_KEYS)),
            hooks=HooksSettings(**hooks),
            catalogue=catalogue,
            topic_overrides=topic_ov,
            module_overrides=module_ov,
        )

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
            out["topics"] = _plain(self.topic_overrides)
            out["modules"] = _plain(self.module_overrides)
        for name, obj in (("queue", self.queue), ("batch", self.batch), ("ingest", self.ingest),
                          ("hooks", self.hooks)):
            out[name] = {k: v for k, v in vars(obj).items() if v is not None}
        return out

    def to_toml(self, masked: bool = True, full: bool = False) -> str:
        return dump_toml(self.to_dict(masked=masked, full=full))


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, frozenset)):
        return [_plain(x) for x in (sorted(v) if isinstance(v, frozenset) else v)]
    return v


def _none_word(v: Any) -> Any:
    return "none" if v is None else v


def topic_to_dict(t: TopicSpec) -> dict[str, Any]:
    """A topic's configurable keys, as they would be written in [topics.<alias>]."""
    d: dict[str, Any] = {
        "topic": t.topic, "kind": t.kind, "window_size": t.window_size, "ttl_s": _none_word(t.ttl_s),
        "retention_s": _none_word(t.retention_s), "max_bytes": t.max_bytes, "fill": _none_word(t.fill),
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
        "heartbeat_s": _none_word(m.heartbeat_s), "batch_timeout_s": m.batch_timeout_s,
        "upload_empty": m.upload_empty, "layout": m.layout, "output_ttl_s": m.output_ttl_s,
        "run_timeout_s": m.run_timeout_s,
    }
    if m.algorithm is not None:
        d["algorithm"] = m.algorithm
    return d


# ---------------------------------------------------------------------------------------
# section builders
# ---------------------------------------------------------------------------------------


_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "sentinel")


def _redis(raw: Any) -> RedisSettings:
    r = _section("redis", raw, REDIS_KEYS)
    scheme = r["url"].split("://", 1)[0] if "://" in r["url"] else ""
    if scheme not in _REDIS_SCHEMES:
        raise ConfigError(f"redis.url: {mask_url(r['url'])!r} must start with one of "
                          + ", ".join(f"{s}://" for s in _REDIS_SCHEMES))
    for i, s in enumerate(r["sentinels"]):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+:\d{1,5}", s):
            raise ConfigError(f"redis.sentinels[{i}]: {s!r} is not host:port")
    if r["sentinels"] and not r["sentinel_service"]:
        raise ConfigError("redis.sentinel_service: required when redis.sentinels is set")
    if r["sentinel_service"] and not r["sentinels"]:
        raise ConfigError("redis.sentinels: required when redis.sentinel_service is set")
    tls = scheme.startswith("rediss")
    for k in REDIS_SSL_FILE_KEYS:
        path = r[k]
        if path is None:
            continue
        if not tls:
            raise ConfigError(f"redis.{k}: set, but redis.url {mask_url(r['url'])!r} does not use TLS "
                              "(use rediss:// or rediss+sentinel://)")
        if not Path(path).is_file():
            raise ConfigError(f"redis.{k}: file not found: {path}")
    if r["ssl_keyfile"] is not None and r["ssl_certfile"] is None:
        raise ConfigError("redis.ssl_keyfile: set without redis.ssl_certfile (the client certificate)")
    r["sentinels"] = tuple(r["sentinels"])
    return RedisSettings(**r)


def _group_policy(raw: dict[str, Any]) -> dict[str, str]:
    """kafka.static_membership / kafka.assignor, taken out of the [kafka] table (they are
    ours, not kafka-python options). true/false are accepted for static_membership."""
    out: dict[str, str] = {}
    for key in KAFKA_GROUP_KEYS:
        value = raw.pop(key.name, key.default)
        if key.name == "static_membership" and isinstance(value, bool):
            value = "on" if value else "off"
        out[key.name] = _check(f"kafka.{key.name}", key, value)
    return out


def _kafka(raw: Any) -> KafkaSettings:
    raw = _table("kafka", raw)
    cons_raw = _table("kafka.consumer", raw.pop("consumer", {}))
    prod_raw = _table("kafka.producer", raw.pop("producer", {}))
    policy = _group_policy(raw)
    cons_keys, prod_keys = _kafka_key_sets()
    shared_keys = {**cons_keys, **prod_keys}
    group_keys = {k.name for k in KAFKA_GROUP_KEYS}

    def explicit(path: str, table: dict[str, Any], keys: dict[str, Key], extra: list[str]) -> dict:
        out = {}
        for k, v in table.items():
            if k in group_keys and path != "kafka":
                raise ConfigError(f"{path}.{k}: set it in [kafka] (kafka.{k}); it applies to the "
                                  "ingesters' consumer group only")
            if k not in keys:
                raise _unknown(path, k, list(keys) + extra)
            out[k] = _check(f"{path}.{k}", keys[k], v)
        return out

    shared = explicit("kafka", raw, shared_keys, ["consumer", "producer"])
    cons_ex = explicit("kafka.consumer", cons_raw, cons_keys, [])
    prod_ex = explicit("kafka.producer", prod_raw, prod_keys, [])

    def resolve(keys: dict[str, Key], own: tuple[Key, ...], section: dict[str, Any],
                path: str) -> tuple[dict[str, Any], dict[str, str]]:
        cfg: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for k in KAFKA_SHARED_KEYS:
            if k.name in keys:
                cfg[k.name], origin[k.name] = k.default, f"kafka.{k.name}"
        for k in own:
            cfg[k.name], origin[k.name] = k.default, f"{path}.{k.name}"
        for k, v in shared.items():
            if k in keys:
                cfg[k], origin[k] = v, f"kafka.{k}"
        for k, v in section.items():
            cfg[k], origin[k] = v, f"{path}.{k}"
        return {k: v for k, v in cfg.items() if v is not None}, origin

    cons, cons_origin = resolve(cons_keys, KAFKA_CONSUMER_KEYS, cons_ex, "kafka.consumer")
    prod, prod_origin = resolve(prod_keys, KAFKA_PRODUCER_KEYS, prod_ex, "kafka.producer")
    if cons.get("enable_auto_commit"):
        raise ConfigError(f"{cons_origin['enable_auto_commit']}: must be false: offsets are committed "
                          "only after the Redis writes succeed")
    for cfg, origin in ((cons, cons_origin), (prod, prod_origin)):
        _check_security(cfg, origin)
    if prod.get("enable_idempotence"):
        if prod.get("acks") != "all":
            raise ConfigError(f"{prod_origin['acks']}: enable_idempotence needs acks = \"all\" "
                              f"(got {prod['acks']!r}); set kafka.producer.enable_idempotence = false "
                              "to use it")
        if prod.get("max_in_flight_requests_per_connection", 5) > 5:
            raise ConfigError(f"{prod_origin['max_in_flight_requests_per_connection']}: at most 5 "
                              "with enable_idempotence")
        if prod.get("retries") == 0:
            raise ConfigError(f"{prod_origin['retries']}: enable_idempotence needs retries > 0")
    codec = prod.get("compression_type")
    if codec is not None:
        from kafka import codec as kc

        if not getattr(kc, f"has_{codec}")():
            lib = {"snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard", "gzip": "zlib"}[codec]
            raise ConfigError(f"{prod_origin['compression_type']}: {codec!r} needs the {lib} package, "
                              "which is not installed")
    if cons["heartbeat_interval_ms"] >= cons["session_timeout_ms"]:
        raise ConfigError(f"{cons_origin['heartbeat_interval_ms']}: must be below session_timeout_ms "
                          f"({cons['session_timeout_ms']})")
    return KafkaSettings(consumer=MappingProxyType(cons), producer=MappingProxyType(prod), **policy)


def _check_security(cfg: dict[str, Any], origin: dict[str, str]) -> None:
    proto = cfg.get("security_protocol", "PLAINTEXT")
    if proto.startswith("SASL_"):
        mech = cfg.get("sasl_mechanism")
        if mech is None:
            raise ConfigError(f"kafka.sasl_mechanism: required with security_protocol {proto}")
        if mech in SASL_MECHANISMS:
            for k in ("sasl_plain_username", "sasl_plain_password"):
                if not cfg.get(k):
                    raise ConfigError(f"kafka.{k}: required with sasl_mechanism {mech}")
    for k in SSL_FILE_KEYS:
        p = cfg.get(k)
        if p is not None and not Path(p).is_file():
            raise ConfigError(f"{origin.get(k, 'kafka.' + k)}: file not found: {p}")


def _catalogue(topics_raw: Any, modules_raw: Any
               ) -> tuple[Mapping[str, Mapping[str, Any]], Mapping[str, Mapping[str, Any]], Catalogue]:
    topics_raw = _table("topics", topics_raw)
    modules_raw = _table("modules", modules_raw)
    base = Catalogue.build()
    aliases = [t.alias for t in base.topics]
    names = [m.name for m in base.modules]
    topic_ov: dict[str, dict[str, Any]] = {}
    topic_names: dict[str, str] = {}
    for alias, table in topics_raw.items():
        if alias not in aliases:
            raise ConfigError(f"topics.{alias}: unknown topic alias; {_hint(alias, aliases)}")
        t = _section(f"topics.{alias}", table, TOPIC_KEYS, defaults=False)
        topic_ov[alias] = {k: _none_word(v) for k, v in t.items()}
        if "topic" in t:
            if not _KAFKA_TOPIC.match(t["topic"]):
                raise ConfigError(f"topics.{alias}.topic: {t['topic']!r} is not a valid Kafka topic name")
            topic_names[alias] = t.pop("topic")
        topics_raw[alias] = t
    module_ov: dict[str, dict[str, Any]] = {}
    for name, table in modules_raw.items():
        if name not in names:
            raise ConfigError(f"modules.{name}: unknown module; {_hint(name, names)}")
        m = _section(f"modules.{name}", table, MODULE_KEYS, defaults=False)
        _check_dotted(f"modules.{name}.algorithm", m.get("algorithm"))
        module_ov[name] = {k: ("all" if k == "triggers" and v is None else _none_word(v))
                           for k, v in m.items()}
        modules_raw[name] = m
    final_names = {t.alias: topic_names.get(t.alias, t.topic) for t in base.topics}
    owner: dict[str, str] = {}
    for alias, name in final_names.items():
        if name in owner:
            renamed = alias if alias in topic_names else owner[name]
            other = owner[name] if renamed == alias else alias
            raise ConfigError(f"topics.{renamed}.topic: {name!r} is already the topic of {other!r}")
        owner[name] = alias
    try:
        cat = Catalogue.build(topics_raw, modules_raw, topic_names)
    except CatalogueError as e:
        raise ConfigError(str(e)) from None

    def freeze(d: dict[str, dict[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
        return MappingProxyType({k: MappingProxyType(v) for k, v in d.items()})

    return freeze(topic_ov), freeze(module_ov), cat


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> tuple[str, ...]:
    """Write the environment overrides into the parsed TOML; returns the variables used."""
    all_keys = {"": GLOBAL_KEYS, "redis": REDIS_KEYS, "kafka": KAFKA_SHARED_KEYS + KAFKA_GROUP_KEYS,
                "queue": QUEUE_KEYS, "hooks": HOOKS_KEYS}
    applied = []
    for ov in ENV_OVERRIDES:
        text = env.get(ov.var)
        if text is None or text == "":
            continue
        if ov.path == ("modules",):
            _apply_modules_env(raw, ov.var, text)
            applied.append(ov.var)
            continue
        table_name = ov.path[0] if len(ov.path) == 2 else ""
        key = next(k for k in all_keys[table_name] if k.name == ov.path[-1])
        value: Any = text
        if key.type == "int":
            try:
                value = int(text)
            except ValueError:
                raise ConfigError(f"{ov.var}: expected an integer, got {text!r}") from None
        if table_name:
            table = raw.setdefault(table_name, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{table_name}: expected a table, got {_tname(table)}")
            table[key.name] = value
            if table_name == "kafka":
                for sub in ("consumer", "producer"):
                    if isinstance(table.get(sub), dict) and key.name in table[sub]:
                        table[sub][key.name] = value
        else:
            raw[key.name] = value
        applied.append(ov.var)
    return tuple(applied)


def _apply_modules_env(raw: dict[str, Any], var: str, text: str) -> None:
    """Merge a JSON {module: {key: value}} over the TOML's [modules] tables, key by key
    (the values are validated later with the TOML's, under modules.<name>.<key>)."""
    import json

    try:
        value = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{var}: invalid JSON: {e}") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ConfigError(f"{var}: expected a JSON object of objects, such as "
                          '{"load_prediction": {"algorithm": "pkg.mod:fn"}}')
    modules = raw.setdefault("modules", {})
    if not isinstance(modules, dict):
        raise ConfigError(f"modules: expected a table, got {_tname(modules)}")
    for name, keys in value.items():
        table = modules.setdefault(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"modules.{name}: expected a table, got {_tname(table)}")
        table.update(keys)


# ---------------------------------------------------------------------------------------
# a tiny TOML writer (tomllib only reads)
# ---------------------------------------------------------------------------------------

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(k: str) -> str:
    return k if _BARE.match(k) else _toml_str(k)


def _toml_str(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as a TOML value")


def dump_toml(d: Mapping[str, Any]) -> str:
    """TOML for nested dicts of scalars and scalar lists; None values are left out."""
    lines: list[str] = []

    def table(prefix: list[str], t: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in t.items() if not isinstance(v, Mapping) and v is not None]
        subs = [(k, v) for k, v in t.items() if isinstance(v, Mapping)]
        if prefix and scalars:
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_toml_key(p) for p in prefix) + "]")
        for k, v in scalars:
            lines.append(f"{_toml_key(k)} = {toml_value(v)}")
        for k, v in subs:
            table(prefix + [k], v)

    table([], d)
    return "\n".join(lines) + "\n"

