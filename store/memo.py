"""A worker's memo of hourly and global windows: unchanged history is not decoded twice.

A station's hourly window (168 hours of realtime data) changes about once an hour and the
global calendar (hundreds of dates) about once a year, yet every station job reads them, and
decoding them and building the hourly grid was the largest part of a job's own work. The job still reads the window from Redis every time (one HGETALL in the job's one
read round trip); the memo only answers "are these the bytes I decoded last time?" by a
digest of the stored fields and values, and if so hands out the views built from those
bytes before (the hourly grid) instead of decoding and building them again.

Contracts:
- never older than Redis: the answer is always for the bytes just read (a TTL expiry, a
  restart or a rewrite changes the digest; an empty reply is never memoised);
- what is kept is only ever handed out as a copy (the grid view is copied per module,
  parsers.inputs), so no module can change what another job gets;
- bounded: at most `max_entries` (station, alias) entries (a global window is one entry for
  every station), least recently used evicted; an entry is a digest and the views built (the
  grid of the traffic model's 168 hours with a few guns: about `ENTRY_BYTES_TYPICAL`, held as
  tuples so the garbage collector does not walk them, parsers.inputs), never the decoded
  window.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

from store.codec import decode_item

#: measured with bench.jobs_bench's traffic stations (168 hours, a few guns): the grid view
#: an entry keeps; the decoded window itself (~380 KB) is never kept
ENTRY_BYTES_TYPICAL = 35_000  # so the default bound is about 70 MB per worker process
DEFAULT_MAX_ENTRIES = 2048


class MemoWindow(Mapping[str, Any]):
    """An hourly window read by a job: decoded on first access only, and `views` (shared with
    the memo entry for the same bytes) holds what was built from it before (parsers.inputs
    keeps the grid there), so an unchanged window is neither decoded nor built again."""

    __slots__ = ("_raw", "_data", "views")

    def __init__(self, raw: dict[bytes, bytes], views: dict[Any, Any]) -> None:
        self._raw = raw
        self._data: dict[str, Any] | None = None
        self.views = views

    def _decoded(self) -> dict[str, Any]:
        if self._data is None:
            self._data = _decode(self._raw)
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._raw)


def digest(raw: dict[bytes, bytes]) -> bytes:
    """A digest of a hash's fields and values, independent of the order Redis returns them."""
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(raw):
        v = raw[k]
        h.update(len(k).to_bytes(4, "little"))
        h.update(k)
        h.update(len(v).to_bytes(4, "little"))
        h.update(v)
    return h.digest()


class HourlyMemo:
    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max(0, int(max_entries))
        self._entries: OrderedDict[tuple[str | None, str], tuple[bytes, dict[Any, Any]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def window(self, station: str | None, alias: str, raw: dict[bytes, bytes]) -> Mapping[str, Any]:
        """The window for the HGETALL reply `raw` (field -> msgpack item); `station` None for
        a global window (one entry serves every station)."""
        if not raw or self.max_entries == 0:
            self._entries.pop((station, alias), None)
            return _decode(raw)
        key = (station, alias)
        d = digest(raw)
        hit = self._entries.get(key)
        if hit is not None and hit[0] == d:
            self._entries.move_to_end(key)
            self.hits += 1
            return MemoWindow(raw, hit[1])
        self.misses += 1
        views: dict[Any, Any] = {}
        self._entries[key] = (d, views)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return MemoWindow(raw, views)

    def clear(self) -> None:
        self._entries.clear()


def _decode(raw: dict[bytes, bytes]) -> dict[str, Any]:
    return {k.decode() if isinstance(k, bytes) else k: decode_item(v) for k, v in raw.items()}
