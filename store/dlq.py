"""Dead letters: a capped Redis stream, idempotent per (topic, partition, offset, element).

A replayed bad message must not add a second entry (spec §6.7), so `add()` runs one script
that checks a seen-index before XADD and counts new entries per (topic, reason) in
`<prefix>:counters:{dlq}` (the three keys share the {dlq} slot). The seen-index is a zset of entry idents scored by the millisecond
part of their stream id; after each call it is trimmed to the stream's oldest entry, so it
guards exactly as long as the stream holds the entries (the `dlq_maxlen` cap decides, not a
clock): a replay however late adds nothing while its entry is still stored. It has no TTL.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from store.keys import Keys

_ADD = """
-- KEYS: stream, seen zset, counters hash. ARGV: maxlen, then 11 per entry:
-- id topic partition offset ts reason detail element_index raw raw_len dead_at
local maxlen = ARGV[1]
local out = {}
local n = (#ARGV - 1) / 11
for i = 0, n - 1 do
  local b = 1 + i * 11
  local id = ARGV[b + 1]
  if redis.call('ZSCORE', KEYS[2], id) then
    out[#out + 1] = ''
  else
    local sid = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*',
      'topic', ARGV[b + 2], 'partition', ARGV[b + 3], 'offset', ARGV[b + 4], 'ts', ARGV[b + 5],
      'reason', ARGV[b + 6], 'detail', ARGV[b + 7], 'element_index', ARGV[b + 8],
      'raw', ARGV[b + 9], 'raw_len', ARGV[b + 10], 'dead_at', ARGV[b + 11])
    redis.call('ZADD', KEYS[2], string.match(sid, '^%d+'), id)
    redis.call('HINCRBY', KEYS[3], ARGV[b + 2] .. ':' .. ARGV[b + 6], 1)
    out[#out + 1] = sid
  end
end
-- forget the idents of entries the stream no longer holds (trimmed by the cap or removed);
-- idents from the oldest entry's millisecond are kept, so nothing stored is ever unguarded
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
if first then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.match(first[1], '^%d+'))
  redis.call('PERSIST', KEYS[2])  -- older versions gave the index a TTL
else
  redis.call('DEL', KEYS[2])
end
return out
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    ts: int  # record timestamp, ms
    reason: str
    detail: str
    raw: bytes = b""
    element_index: int | None = None

    @property
    def ident(self) -> str:
        ei = "" if self.element_index is None else str(self.element_index)
        return f"{self.topic}:{self.partition}:{self.offset}:{ei}"


class DeadLetters:
    def __init__(self, r: redis.Redis, prefix: str = "sf", maxlen: int = 100_000,
                 raw_max_bytes: int = 65_536) -> None:
        self.r = r
        self.keys = Keys(prefix)
        self.maxlen = int(maxlen)
        self.raw_max_bytes = int(raw_max_bytes)
        self._script = r.register_script(_ADD)

    def add(self, entries: Iterable[DeadLetter], now_ms: int | None = None) -> list[str | None]:
        """Write new entries in one round trip; returns each entry's stream id (None: already there)."""
        entries = list(entries)
        if not entries:
            return []
        now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
        args: list[Any] = [self.maxlen]
        for e in entries:
            raw = bytes(e.raw or b"")
            args += [e.ident, e.topic, e.partition, e.offset, e.ts, e.reason, (e.detail or "")[:500],
                     "" if e.element_index is None else e.element_index,
                     raw[: self.raw_max_bytes], len(raw), now_ms]
        k = self.keys
        ids = self._script(keys=[k.dlq, k.dlq_seen, k.counters("dlq")], args=args)
        return [(x.decode() if isinstance(x, bytes) else x) or None for x in ids]

    def list(self, count: int = 20, after: str | None = None) -> list[dict[str, Any]]:
        """Entries oldest first, starting after stream id `after` (exclusive)."""
        start = "-" if after is None else f"({after}"
        rows: Any = self.r.xrange(self.keys.dlq, start, "+", count=count)
        return [_decode(i, f) for i, f in rows]

    def latest(self, count: int = 20) -> builtins.list[dict[str, Any]]:  # `list` is the method above
        rows: Any = self.r.xrevrange(self.keys.dlq, "+", "-", count=count)
        return [_decode(i, f) for i, f in rows]

    def get(self, entry_id: str) -> dict[str, Any] | None:
        got: Any = self.r.xrange(self.keys.dlq, entry_id, entry_id, count=1)
        return _decode(*got[0]) if got else None

    show = get

    def count(self) -> int:
        return int(self.r.xlen(self.keys.dlq))

    def counts(self) -> dict[tuple[str, str], int]:
        """(topic, reason) -> entries ever added (the counter survives stream trimming)."""
        out = {}
        for f, v in self.r.hgetall(self.keys.counters("dlq")).items():
            topic, _, reason = (f.decode() if isinstance(f, bytes) else f).rpartition(":")
            out[(topic, reason)] = int(v)
        return out


def old_dlq_warning(r: Any, prefix: str = "sf") -> str | None:
    """One line for the operator commands when dead-letter keys of a version before the {dlq}
    hash tag still exist (their entries and counts are invisible to this version until they
    are renamed); None when there are none. One EXISTS per name, so it also runs on a cluster."""
    renamed = Keys(prefix).dlq_renamed()
    pipe = r.pipeline(transaction=False)
    for old, _ in renamed:
        pipe.exists(old)
    found = [(old, new) for (old, new), n in zip(renamed, pipe.execute(), strict=True) if n]
    if not found:
        return None
    return ("warning: dead letters of an earlier version are still under "
            + ", ".join(f"{old} (now {new})" for old, new in found)
            + "; stop the ingesters and rename them (docs/operations.md, Upgrading)")


def _decode(entry_id: Any, fields: Any) -> dict[str, Any]:  # one XRANGE entry
    f = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}

    def s(name: str) -> str:
        v = f.get(name, b"")
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    ei = s("element_index")
    raw = f.get("raw", b"")
    return {
        "id": entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        "topic": s("topic"),
        "partition": int(s("partition")),
        "offset": int(s("offset")),
        "ts": int(s("ts")),
        "reason": s("reason"),
        "detail": s("detail"),
        "element_index": int(ei) if ei else None,
        "raw": raw if isinstance(raw, bytes) else raw.encode(),
        "raw_len": int(s("raw_len")),
        "dead_at": int(s("dead_at")),
    }
