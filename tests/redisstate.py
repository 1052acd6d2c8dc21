"""What a Redis database holds, as one comparable value (tests compare two writers or two
deliveries by it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def redis_state(r: Any, pattern: str = "*", skip: Sequence[str] = (), decode: bool = False) -> dict[Any, Any]:
    """Every key matching `pattern` (but those starting with one of `skip`): its type, full
    content and whether it has a TTL (not the TTL itself, which moves with the clock)."""
    out: dict[Any, Any] = {}
    for k in sorted(r.scan_iter(match=pattern)):
        ks = k.decode()
        if skip and ks.startswith(tuple(skip)):
            continue
        t = r.type(k).decode()
        if t == "string":
            v = r.get(k)
        elif t == "list":
            v = r.lrange(k, 0, -1)
        elif t == "hash":
            v = r.hgetall(k)
        elif t == "zset":
            v = r.zrange(k, 0, -1, withscores=True)
        else:
            v = None
        out[ks if decode else k] = (t, v, r.pttl(k) > 0)
    return out
