"""Building the [redis], [kafka] and catalogue ([topics], [modules]) settings from their
parsed tables, with the checks that span several keys (TLS files, SASL, idempotence,
sentinels, topic renames, the catalogue's own rules)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from parsers.catalogue import Catalogue, CatalogueError
from stationflow.settings.model import KafkaSettings, RedisSettings, none_word
from stationflow.settings.schema import (
    KAFKA_CONSUMER_KEYS,
    KAFKA_GROUP_KEYS,
    KAFKA_PRODUCER_KEYS,
    KAFKA_SHARED_KEYS,
    MODULE_KEYS,
    REDIS_KEYS,
    REDIS_SSL_FILE_KEYS,
    SASL_MECHANISMS,
    SSL_FILE_KEYS,
    TOPIC_KEYS,
    ConfigError,
    Key,
    kafka_key_sets,
)
from stationflow.settings.values import check_dotted, check_value, hint, mask_url, section, unknown_key
from stationflow.settings.values import table as as_table

_KAFKA_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "sentinel",
                  "redis+cluster", "rediss+cluster")
_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def queue_redis_url(url: str | None, redis: RedisSettings) -> str | None:
    """Validate queue.redis_url against redis.url: RQ needs a plain Redis (or Sentinel)."""
    if url is None:
        if redis.url.split("://", 1)[0] in _CLUSTER_SCHEMES:
            raise ConfigError(f"queue.redis_url: required because redis.url {mask_url(redis.url)!r} is a "
                              "Redis Cluster, where RQ cannot run; name a plain Redis for the queues "
                              "(or set STATIONFLOW_QUEUE_REDIS_URL)")
        return None
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in _CLUSTER_SCHEMES:
        raise ConfigError(f"queue.redis_url: {mask_url(url)!r} is a Redis Cluster; RQ needs a plain Redis "
                          "(redis://, rediss://, unix:// or redis+sentinel://)")
    if scheme not in _REDIS_SCHEMES:
        raise ConfigError(f"queue.redis_url: {mask_url(url)!r} must start with one of "
                          + ", ".join(f"{s}://" for s in _REDIS_SCHEMES if s not in _CLUSTER_SCHEMES))
    return url


def redis_settings(raw: Any) -> RedisSettings:
    r = section("redis", raw, REDIS_KEYS)
    scheme = r["url"].split("://", 1)[0] if "://" in r["url"] else ""
    if scheme not in _REDIS_SCHEMES:
        raise ConfigError(f"redis.url: {mask_url(r['url'])!r} must start with one of "
                          + ", ".join(f"{s}://" for s in _REDIS_SCHEMES))
    for i, s in enumerate(r["sentinels"]):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+:\d{1,5}", s):
            raise ConfigError(f"redis.sentinels[{i}]: {s!r} is not host:port")
    if r["sentinels"] and scheme in _CLUSTER_SCHEMES:
        raise ConfigError("redis.sentinels: not used with a redis+cluster:// URL (the cluster fails over itself)")
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
                              "(use rediss://, rediss+sentinel:// or rediss+cluster://)")
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
        out[key.name] = check_value(f"kafka.{key.name}", key, value)
    return out


def kafka_settings(raw: Any) -> KafkaSettings:
    raw = as_table("kafka", raw)
    cons_raw = as_table("kafka.consumer", raw.pop("consumer", {}))
    prod_raw = as_table("kafka.producer", raw.pop("producer", {}))
    policy = _group_policy(raw)
    cons_keys, prod_keys = kafka_key_sets()
    shared_keys = {**cons_keys, **prod_keys}
    group_keys = {k.name for k in KAFKA_GROUP_KEYS}

    def explicit(path: str, table: dict[str, Any], keys: dict[str, Key], extra: list[str]) -> dict:
        out = {}
        for k, v in table.items():
            if k in group_keys and path != "kafka":
                raise ConfigError(f"{path}.{k}: set it in [kafka] (kafka.{k}); it applies to the "
                                  "ingesters' consumer group only")
            if k not in keys:
                raise unknown_key(path, k, list(keys) + extra)
            out[k] = check_value(f"{path}.{k}", keys[k], v)
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
        for name, v in shared.items():
            if name in keys:
                cfg[name], origin[name] = v, f"kafka.{name}"
        for name, v in section.items():
            cfg[name], origin[name] = v, f"{path}.{name}"
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


def catalogue_settings(topics_raw: Any, modules_raw: Any
               ) -> tuple[Mapping[str, Mapping[str, Any]], Mapping[str, Mapping[str, Any]], Catalogue]:
    topics_raw = as_table("topics", topics_raw)
    modules_raw = as_table("modules", modules_raw)
    base = Catalogue.build()
    aliases = [t.alias for t in base.topics]
    names = [m.name for m in base.modules]
    topic_ov: dict[str, dict[str, Any]] = {}
    topic_names: dict[str, str] = {}
    for alias, table in topics_raw.items():
        if alias not in aliases:
            raise ConfigError(f"topics.{alias}: unknown topic alias; {hint(alias, aliases)}")
        t = section(f"topics.{alias}", table, TOPIC_KEYS, defaults=False)
        topic_ov[alias] = {k: none_word(v) for k, v in t.items()}
        if "topic" in t:
            if not _KAFKA_TOPIC.match(t["topic"]):
                raise ConfigError(f"topics.{alias}.topic: {t['topic']!r} is not a valid Kafka topic name")
            topic_names[alias] = t.pop("topic")
        topics_raw[alias] = t
    module_ov: dict[str, dict[str, Any]] = {}
    for name, table in modules_raw.items():
        if name not in names:
            raise ConfigError(f"modules.{name}: unknown module; {hint(name, names)}")
        m = section(f"modules.{name}", table, MODULE_KEYS, defaults=False)
        check_dotted(f"modules.{name}.algorithm", m.get("algorithm"))
        module_ov[name] = {k: ("all" if k == "triggers" and v is None else none_word(v))
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
