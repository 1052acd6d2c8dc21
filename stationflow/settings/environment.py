"""Environment variables that override the configuration file (later wins).

`ENV_OVERRIDES` is the list; each names one key (or, for STATIONFLOW_MODULES, the [modules]
tables as JSON). An override of a [kafka] key also replaces the same key in
[kafka.consumer] and [kafka.producer], so the environment always wins. Empty variables are
ignored. The values are written into the parsed TOML and validated with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stationflow.settings.schema import (
    GLOBAL_KEYS,
    HOOKS_KEYS,
    KAFKA_GROUP_KEYS,
    KAFKA_SHARED_KEYS,
    QUEUE_KEYS,
    REDIS_KEYS,
    ConfigError,
)
from stationflow.settings.values import type_name


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
    EnvOverride("STATIONFLOW_KAFKA_BOOTSTRAP_TIMEOUT_MS", ("kafka", "bootstrap_timeout_ms"),
                "how long to try to reach a first broker (ms)"),
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
    EnvOverride("STATIONFLOW_QUEUE_REDIS_URL", ("queue", "redis_url"),
                "plain Redis of the RQ queues (required with a redis+cluster:// redis.url)"),
    EnvOverride("STATIONFLOW_QUEUE_HIGH_WATER", ("queue", "high_water"), "queue depth that pauses fetching"),
    EnvOverride("STATIONFLOW_QUEUE_LOW_WATER", ("queue", "low_water"), "queue depth that resumes fetching"),
    EnvOverride("STATIONFLOW_HOOKS_RESULT_HANDLER", ("hooks", "result_handler"), "result hook, \"pkg.mod:fn\""),
    EnvOverride("STATIONFLOW_HOOKS_BATCH_UPLOAD_HANDLER", ("hooks", "batch_upload_handler"),
                "batch upload hook, \"pkg.mod:fn\""),
    EnvOverride("STATIONFLOW_MODULES", ("modules",), "module keys as JSON: {\"<module>\": {\"<key>\": value}}"),
)


def apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> tuple[str, ...]:
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
                raise ConfigError(f"{table_name}: expected a table, got {type_name(table)}")
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
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{var}: invalid JSON: {e}") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ConfigError(f"{var}: expected a JSON object of objects, such as "
                          '{"load_prediction": {"algorithm": "pkg.mod:fn"}}')
    modules = raw.setdefault("modules", {})
    if not isinstance(modules, dict):
        raise ConfigError(f"modules: expected a table, got {type_name(modules)}")
    for name, keys in value.items():
        table = modules.setdefault(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"modules.{name}: expected a table, got {type_name(table)}")
        table.update(keys)


# ---------------------------------------------------------------------------------------
# a tiny TOML writer (tomllib only reads)
