"""Plain-text counter hashes `<prefix>:counters:<group>`: HINCRBY inside the caller's pipeline,
readable with HGETALL by an operator."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import redis

from store.keys import Keys, keys_for
from store.scripts import LuaScript, ScriptPipeline

#: several HINCRBYs on one hash as one command (one key: Redis-Cluster safe); a station job
#: bumps two counters per module run, which as separate commands cost more to build and parse
#: than the Redis work they do
_INCR_MANY = LuaScript("incr_many", """
-- KEYS[1] counter hash; ARGV: field, n, field, n, ...
for i = 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
""")


def queue_incr_many(pipe: ScriptPipeline, key: str, counts: Mapping[str, int]) -> None:
    """Queue the increments of `counts` (field -> n, zeros left out) on hash `key`, as one
    script call on the caller's pipeline."""
    args: list[Any] = []
    for fld, n in counts.items():
        if n:
            args += [fld, n]
    if args:
        pipe.call(_INCR_MANY, [key], args)


class Counters:
    def __init__(self, r: redis.Redis, prefix: str = "sf") -> None:
        self.r = r
        self.keys = keys_for(r, prefix)

    def incr(self, pipe: Any, name: str, field: str, n: int = 1) -> None:
        """Queue one increment on `pipe` (a pipeline); zero increments are not sent."""
        if n:
            pipe.hincrby(self.keys.counters(name), field, n)

    def incr_many(self, pipe: Any, counts: dict[tuple[str, str], int]) -> None:
        for (name, field), n in counts.items():
            self.incr(pipe, name, field, n)

    def get(self, name: str) -> dict[str, int]:
        """The counters of group `name`, summed over its buckets (one hash on one Redis)."""
        return read_groups(self.r, self.keys, [name]).get(name, {})

    def groups(self) -> list[str]:
        """Names of every counter group (SCAN, for `stationflow status`)."""
        pat = f"{self.keys.prefix}:counters:*"
        return sorted({self.keys.counter_group(_s(k)) for k in self.r.scan_iter(match=pat, count=500)})


class Tally:
    """Counts gathered in memory, written later in one pipeline. Thread-safe: a worker's job,
    upload and sweeper threads may share one (a count added while another thread drains is
    never lost)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = defaultdict(int)
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return any(self.counts.values())

    def add(self, name: str, field: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self.counts[(name, field)] += n

    def restore(self, counts: dict[tuple[str, str], int]) -> None:
        """Put back counts whose write failed, so the next flush carries them."""
        for (name, fld), n in counts.items():
            self.add(name, fld, n)

    def drain(self) -> dict[tuple[str, str], int]:
        with self._lock:
            out = {k: n for k, n in self.counts.items() if n}
            self.counts.clear()
        return out


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def read_groups(r: Any, keys: Keys, groups: list[str] | None = None) -> dict[str, dict[str, int]]:
    """group -> field -> count, every bucket of a group summed (SCAN of the counter hashes and
    one pipeline); `groups` limits which are read."""
    found = [_s(k) for k in r.scan_iter(match=f"{keys.prefix}:counters:*", count=500)]
    found = [k for k in found if groups is None or keys.counter_group(k) in groups]
    if not found:
        return {}
    pipe = r.pipeline(transaction=False)
    for k in found:
        pipe.hgetall(k)
    out: dict[str, dict[str, int]] = {}
    for k, h in zip(found, pipe.execute(), strict=True):
        g = out.setdefault(keys.counter_group(k), {})
        for f, v in h.items():
            g[_s(f)] = g.get(_s(f), 0) + int(v)
    return out
