"""Dead letters: capped Redis streams, idempotent per (topic, partition, offset, element).

A replayed bad message must not add a second entry (spec §6.7), so `add()` runs one script
per bucket that checks the bucket's seen-index before XADD and counts new entries per
(topic, reason) in the bucket's counter hash (the three keys share one slot: `{dlq}` on one
Redis, the bucket's tag on a cluster, store.keys.Keys.dlq_bucket_keys). A message always
goes to the same bucket (a hash of its origin), so its replay meets its seen-index. The
seen-index is a zset of entry idents scored by the millisecond part of their stream id;
after each call it is trimmed to the stream's oldest entry, so it guards exactly as long as
the stream holds the entries (the `dlq_maxlen` cap, shared out over the buckets, decides, not
a clock): a replay however late adds nothing while its entry is still stored. It has no TTL.
"""

from __future__ import annotations

import builtins
import heapq
import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

from store.keys import Keys, keys_for
from store.scripts import LuaScript, ScriptPipeline

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

_SCRIPT = LuaScript("dlq_add", _ADD)


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
    """The dead letters of deployment `prefix`: `redis.index_buckets` streams (one on one
    Redis), each with its seen-index and counter hash in its slot. A message's entries go to
    the bucket of its origin (`Keys.dlq_bucket`); readers merge every stream by stream id
    (milliseconds, sequence, then bucket), so the order is stable across calls. Entry ids
    are `<stream id>` for the single stream and `<stream id>.<bucket>` for a bucket."""

    def __init__(self, r: redis.Redis, prefix: str = "sf", maxlen: int = 100_000,
                 raw_max_bytes: int = 65_536) -> None:
        self.r = r
        self.keys = keys_for(r, prefix)
        #: each bucket keeps its share of `maxlen` (origins hash evenly over the buckets)
        self.maxlen = -(-int(maxlen) // self.keys.buckets)
        self.raw_max_bytes = int(raw_max_bytes)

    def add(self, entries: Iterable[DeadLetter], now_ms: int | None = None) -> list[str | None]:
        """Write new entries in one round trip (one script call per bucket touched); returns
        each entry's id (None: already there)."""
        entries = list(entries)
        if not entries:
            return []
        now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
        by_bucket: dict[int, list[int]] = {}
        for n, e in enumerate(entries):
            by_bucket.setdefault(self.keys.dlq_bucket(e.topic, e.partition, e.offset), []).append(n)
        pipe = ScriptPipeline(self.r)
        for b, at in by_bucket.items():
            args: list[Any] = [self.maxlen]
            for e in (entries[n] for n in at):
                raw = bytes(e.raw or b"")
                args += [e.ident, e.topic, e.partition, e.offset, e.ts, e.reason, (e.detail or "")[:500],
                         "" if e.element_index is None else e.element_index,
                         raw[: self.raw_max_bytes], len(raw), now_ms]
            pipe.call(_SCRIPT, self.keys.dlq_bucket_keys(b), args)
        out: list[str | None] = [None] * len(entries)
        suffix = "" if self.keys.buckets == 1 else "."
        for (b, at), ids in zip(by_bucket.items(), pipe.execute(), strict=True):
            for n, x in zip(at, ids, strict=True):
                sid = x.decode() if isinstance(x, bytes) else x
                out[n] = f"{sid}{suffix}{b}" if sid and suffix else (sid or None)
        return out

    def iter(self, newest_first: bool = True, page: int = 500) -> Iterator[dict[str, Any]]:
        """Every entry of every stream, merged in id order, paging through each stream (the
        first page of all of them in one round trip)."""
        sources = self.keys.dlq_streams()
        pipe = self.r.pipeline(transaction=False)
        for _, key in sources:
            _page(pipe, key, None, newest_first, page)
        firsts = pipe.execute()
        streams = [self._stream(key, suffix, first, newest_first, page)
                   for (suffix, key), first in zip(sources, firsts, strict=True)]
        return heapq.merge(*streams, key=lambda e: order_key(e["id"]), reverse=newest_first)

    def _stream(self, key: str, suffix: str, rows: Any, newest_first: bool, page: int
                ) -> Iterator[dict[str, Any]]:
        while rows:
            for i, f in rows:
                yield _decode(i, f, suffix)
            if len(rows) < page:
                return
            last = rows[-1][0]
            rows = _page(self.r, key, last.decode() if isinstance(last, bytes) else last, newest_first, page)

    def list(self, count: int = 20, after: str | None = None) -> list[dict[str, Any]]:
        """Entries oldest first, starting after entry id `after` (exclusive)."""
        start = None if after is None else order_key(after)
        picked = (e for e in self.iter(newest_first=False, page=max(count, 10))
                  if start is None or order_key(e["id"]) > start)
        return builtins.list(itertools.islice(picked, count))

    def latest(self, count: int = 20) -> builtins.list[dict[str, Any]]:  # `list` is the method above
        """The newest `count` entries of all streams, newest first (one round trip)."""
        sources = self.keys.dlq_streams()
        pipe = self.r.pipeline(transaction=False)
        for _, key in sources:
            pipe.xrevrange(key, "+", "-", count=count)
        rows = [_decode(i, f, suffix) for (suffix, _), got in zip(sources, pipe.execute(), strict=True)
                for i, f in got]
        return sorted(rows, key=lambda e: order_key(e["id"]), reverse=True)[:count]

    def get(self, entry_id: str) -> dict[str, Any] | None:
        """The entry `entry_id` names, None when no stream holds it (or the id names a bucket
        this deployment does not have)."""
        sid, _, bucket = entry_id.partition(".")
        suffix = f".{bucket}" if bucket else ""
        key = dict(self.keys.dlq_streams()).get(suffix)
        if key is None:
            return None
        got: Any = self.r.xrange(key, sid, sid, count=1)
        return _decode(got[0][0], got[0][1], suffix) if got else None

    show = get

    def count(self) -> int:
        """Entries held now, every stream."""
        pipe = self.r.pipeline(transaction=False)
        for _, key in self.keys.dlq_streams():
            pipe.xlen(key)
        return sum(int(n) for n in pipe.execute())

    def counts(self) -> dict[tuple[str, str], int]:
        """(topic, reason) -> entries ever added (the counter survives stream trimming), every bucket."""
        pipe = self.r.pipeline(transaction=False)
        for key in self.keys.dlq_counter_keys():
            pipe.hgetall(key)
        out: dict[tuple[str, str], int] = {}
        for h in pipe.execute():
            for f, v in h.items():
                topic, _, reason = (f.decode() if isinstance(f, bytes) else f).rpartition(":")
                out[(topic, reason)] = out.get((topic, reason), 0) + int(v)
        return out


def order_key(entry_id: str) -> tuple[int, int, int]:
    """Where an entry id sorts among all streams: stream id, then bucket (the single stream first)."""
    sid, _, bucket = entry_id.partition(".")
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0), int(bucket) if bucket else -1


def _page(r: Any, key: str, after: str | None, newest_first: bool, count: int) -> Any:
    """One page of stream `key` past stream id `after` (exclusive; None: from the end it starts at)."""
    if newest_first:
        return r.xrevrange(key, "+" if after is None else f"({after}", "-", count=count)
    return r.xrange(key, "-" if after is None else f"({after}", "+", count=count)


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


def _decode(entry_id: Any, fields: Any, suffix: str = "") -> dict[str, Any]:  # one XRANGE entry
    f = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}

    def s(name: str) -> str:
        v = f.get(name, b"")
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    ei = s("element_index")
    raw = f.get("raw", b"")
    return {
        "id": (entry_id.decode() if isinstance(entry_id, bytes) else entry_id) + suffix,
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
