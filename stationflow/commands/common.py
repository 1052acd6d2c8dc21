"""What every reading command says first: which Redis it reads and which consumer group.

`status`, `inspect` and `dlq` print `source_line` as their first line and put `source` into
their `--json`, so that a command pointed at the wrong Redis (the built-in default
127.0.0.1:6379 when neither a file nor STATIONFLOW_REDIS_URL names one) or reading the lag
of the wrong group says so instead of printing plausible zeros.
"""

from __future__ import annotations

from typing import Any


def source(settings: Any) -> dict[str, Any]:
    """The Redis (URL without its password), key prefix, Kafka and consumer group in use, and
    whether the Redis URL is only the built-in default."""
    from store.connection import redact

    default = settings.source is None and "STATIONFLOW_REDIS_URL" not in settings.env_applied \
        and not settings.redis.sentinels
    return {"redis": redact(settings.redis.connection_url()), "redis_is_default": default,
            "prefix": settings.prefix, "kafka": settings.kafka.bootstrap_servers,
            "group": settings.kafka.group_id}


def source_line(settings: Any) -> str:
    """One line: `redis URL (prefix P) · kafka HOST:PORT, consumer group G`."""
    s = source(settings)
    hint = " (built-in default: set STATIONFLOW_REDIS_URL or --config)" if s["redis_is_default"] else ""
    return (f"redis {s['redis']}{hint} (prefix {s['prefix']}) · kafka {s['kafka']}, "
            f"consumer group {s['group']}")
