"""The configuration schema: every key of every table, its type, default and doc.

`SECTIONS` is the one declaration the loader validates against and from which the example
file (`stationflow.example.toml`) and `config check` are generated. The kafka-python options
that stationflow does not declare itself pass through with a type taken from kafka-python's
own defaults (`kafka_key_sets`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from parsers.catalogue import DEFAULT_MAX_BYTES, LAYOUTS, RUN_MODES, WINDOW_KINDS

MASK = "***"


class ConfigError(ValueError):
    """A configuration that cannot work; the message names the key path (or env variable)."""


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
        "redis://, rediss:// (TLS), unix://, redis+sentinel://[user:pw@]host:port[,host:port]/service/db or "
        "redis+cluster://[user:pw@]host:port[,host:port]/ (Redis Cluster; rediss+cluster:// for TLS; "
        "then queue.redis_url is required)"),
    Key("username", "str", None, "ACL user name (or put it in the URL)", nullable=True, example="stationflow"),
    Key("password", "str", None, "password (or put it in the URL); masked in all output",
        secret=True, nullable=True, example="change-me"),
    Key("socket_timeout", "float", 10.0, "seconds a command may wait for a reply", minimum=0),
    Key("connect_timeout", "float", 5.0, "seconds to establish a connection", minimum=0),
    Key("health_check_interval", "float", 30.0, "seconds between PINGs on idle connections", minimum=0),
    Key("index_buckets", "int", 0, "keys each global index (station registry, order and batch deadlines) "
        "is split into, spread over the slots (0: 48 on Redis Cluster, 1 on one Redis); set it once, "
        "before the first start", minimum=0),
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
    Key("bootstrap_timeout_ms", "int", 30000,
        "how long a client tries to reach a first broker before the command fails", minimum=1),
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
    Key("min_interval_s", "float", None, "a station runs the module at most once per interval; triggers "
        "inside it are absorbed into one trailing run (0 = no limit)", minimum=0),
)

QUEUE_KEYS: tuple[Key, ...] = (
    Key("name", "str", "stationflow", "RQ queue of station jobs"),
    Key("redis_url", "str", None, "plain Redis (redis://, rediss://, unix:// or redis+sentinel://) for the RQ "
        "queues and registries (unset: redis.url); required when redis.url is a cluster, since RQ cannot "
        "run on Redis Cluster", nullable=True, example="redis://queue-redis:6379/0"),
    Key("high_water", "int", 10000, "ingesters pause fetching above this queue depth", minimum=1),
    Key("low_water", "int", 5000, "and resume below this one", minimum=0),
    Key("job_ttl_s", "int", None, "seconds a queued job may wait before RQ drops it (unset = for ever)",
        nullable=True, minimum=1, example=600),
    Key("result_ttl_s", "int", 60, "seconds RQ keeps a finished job", minimum=0),
    Key("failure_ttl_s", "int", 86400, "seconds RQ keeps a failed job", minimum=0),
    Key("retries", "int", 2, "RQ retries of a job that crashed its worker", minimum=0),
    Key("group_size", "int", 16, "stations per RQ job (1 = a job per station): RQ's own cost per job is shared",
        minimum=1),
)

BATCH_KEYS: tuple[Key, ...] = (
    Key("sweep_interval_s", "float", 1.0, "how often expired batches and lost runs are swept", minimum=0.01),
    Key("keep_s", "float", 3600.0, "finished (uploaded or skipped) batch records stay readable this long",
        minimum=1),
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
def kafka_key_sets() -> tuple[dict[str, Key], dict[str, Key]]:
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

