"""Loading: defaults, then a TOML file, then the environment, validated into `Settings`.

Everything is checked at start-up (spec §6.10): unknown keys anywhere (with the closest valid
key suggested), wrong types, impossible combinations, missing SSL files, and the catalogue
overrides (unknown topics/modules, cycles, local modules depending on `off` ones).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from typing import Any

from stationflow.settings.environment import apply_env
from stationflow.settings.model import (
    BatchSettings,
    HooksSettings,
    IngestSettings,
    QueueSettings,
    Settings,
)
from stationflow.settings.schema import (
    BATCH_KEYS,
    GLOBAL_KEYS,
    HOOKS_KEYS,
    INGEST_KEYS,
    QUEUE_KEYS,
    TOP_LEVEL_TABLES,
    ConfigError,
)
from stationflow.settings.sections import catalogue_settings, kafka_settings, queue_redis_url, redis_settings
from stationflow.settings.toml import read_toml
from stationflow.settings.values import check_dotted, section, unknown_key


def load(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Defaults, then the TOML file (`path` or $STATIONFLOW_CONFIG), then the environment.
    Errors from the file's content are prefixed with its path."""
    env = os.environ if env is None else env
    if path is None:
        path = env.get("STATIONFLOW_CONFIG") or None
    raw: dict[str, Any] = {} if path is None else read_toml(path)
    applied = apply_env(raw, env)
    try:
        s = from_dict(raw)
    except ConfigError as e:
        if path is not None:
            raise ConfigError(f"{path}: {e}") from None
        raise
    object.__setattr__(s, "source", None if path is None else str(path))
    object.__setattr__(s, "env_applied", applied)
    return s


def from_dict(d: Mapping[str, Any] | None = None) -> Settings:
    """Validate a plain nested dict (the parsed TOML); never mutates it."""
    d = copy.deepcopy(dict(d or {}))
    valid_top = [k.name for k in GLOBAL_KEYS] + list(TOP_LEVEL_TABLES)
    for k in d:
        if k not in valid_top:
            raise unknown_key("", k, valid_top)
    top = section("", {k: v for k, v in d.items() if k not in TOP_LEVEL_TABLES}, GLOBAL_KEYS)
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", top["prefix"]):
        raise ConfigError(f"prefix: {top['prefix']!r} must be non-empty without spaces, braces or quotes")
    redis = redis_settings(d.get("redis", {}))
    kafka = kafka_settings(d.get("kafka", {}))
    q = section("queue", d.get("queue", {}), QUEUE_KEYS)
    if not q["name"]:
        raise ConfigError("queue.name: may not be empty")
    if q["low_water"] >= q["high_water"]:
        raise ConfigError(f"queue.low_water ({q['low_water']}) must be below queue.high_water "
                          f"({q['high_water']})")
    q["redis_url"] = queue_redis_url(q["redis_url"], redis)
    hooks = section("hooks", d.get("hooks", {}), HOOKS_KEYS)
    for k, v in hooks.items():
        check_dotted(f"hooks.{k}", v)
    topic_ov, module_ov, catalogue = catalogue_settings(d.get("topics", {}), d.get("modules", {}))
    return Settings(
        **top,
        redis=redis,
        kafka=kafka,
        queue=QueueSettings(**q),
        batch=BatchSettings(**section("batch", d.get("batch", {}), BATCH_KEYS)),
        ingest=IngestSettings(**section("ingest", d.get("ingest", {}), INGEST_KEYS)),
        hooks=HooksSettings(**hooks),
        catalogue=catalogue,
        topic_overrides=topic_ov,
        module_overrides=module_ov,
    )
