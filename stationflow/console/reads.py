"""The console's Redis reads: each page's material in a bounded number of round trips.

Every function here only reads (GET, HGETALL, HMGET, LRANGE, ZRANGE, XREVRANGE, SCAN and the
read-only `read_orders.lua` through the window store), and batches its commands in pipelines
so that a page costs a fixed number of round trips whatever the number of stations or
windows: the stations page is one pipeline over every station's meta hash, a station page is
the two round trips of `inspection.read_station` plus one for its dead letters and batches.
Batches are found with SCAN (there is no index of finished batches); that walk is capped at
`BATCH_SCAN_LIMIT` keys so its cost is bounded too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from store.dlq import DeadLetters
from store.keys import Keys, keys_for

#: dead letters read from the newest end of the stream for per-station attribution
DLQ_RECENT = 500
#: batch keys looked at (SCAN) per page, and batches read in full for the batches page
BATCH_SCAN_LIMIT = 2000
BATCHES_SHOWN = 50
#: the batch fields read for every batch found (one HMGET each, pipelined)
BATCH_FIELDS = ("module", "state", "created", "completed", "finished", "n_expected", "reported", "ok",
                "none", "failed", "expected")

_STATION_IN_RAW = re.compile(rb'"stationId"\s*:\s*"?([0-9A-Za-z_-]{1,64})')


def text(v: bytes | str | None) -> str:
    if v is None:
        return ""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def station_of_raw(raw: bytes) -> str | None:
    """The station a dead letter's raw bytes name (its first `stationId`), if readable."""
    m = _STATION_IN_RAW.search(raw or b"")
    return m.group(1).decode() if m else None


def stations_table(r: Any, prefix: str, aliases: Sequence[str]
                   ) -> tuple[list[tuple[str, int]], dict[str, dict[str, int]]]:
    """(station, last seen ms) newest first, and per station the newest record ms of each of
    `aliases` (the meta hash's ts:<alias>, read with HMGET): two round trips."""
    k = keys_for(r, prefix)
    pipe = r.pipeline(transaction=False)
    for key in k.stations_all():  # the registry's buckets (one key on one Redis)
        pipe.zrevrange(key, 0, -1, withscores=True)
    seen = sorted(((text(m), int(score)) for bucket in pipe.execute() for m, score in bucket),
                  key=lambda x: -x[1])
    fields = [f"ts:{a}" for a in aliases]
    pipe = r.pipeline(transaction=False)
    for station, _ in seen:
        pipe.hmget(k.meta(station), fields)
    rows = pipe.execute() if seen and fields else [[None] * len(fields) for _ in seen]
    return seen, {st: {a: int(v) for a, v in zip(aliases, vals, strict=True) if v}
                  for (st, _), vals in zip(seen, rows, strict=True)}


def recent_dead_letters(r: Any, prefix: str, count: int = DLQ_RECENT) -> list[dict[str, Any]]:
    """The newest `count` dead letters, decoded, each with the station its raw bytes name."""
    out = DeadLetters(r, prefix).latest(count)
    for e in out:
        e["station"] = station_of_raw(e["raw"])
    return out


def batch_ids(r: Any, prefix: str, limit: int = BATCH_SCAN_LIMIT) -> list[str]:
    """Ids of the batches Redis still holds (open, or finished within the tracker's keep time),
    at most `limit` of them (SCAN in steps of 1000)."""
    k = Keys(prefix)
    head = k.batch("")
    out: list[str] = []
    for x in r.scan_iter(match=k.batch("*"), count=1000):  # every master of a cluster
        out.append(text(x)[len(head):])
        if len(out) >= limit:
            break
    return out


def batch_summaries(r: Any, prefix: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    """BATCH_FIELDS of each batch (one pipelined round trip), newest created first."""
    if not ids:
        return []
    k = Keys(prefix)
    pipe = r.pipeline(transaction=False)
    for b in ids:
        pipe.hmget(k.batch(b), BATCH_FIELDS)
    rows = []
    for b, vals in zip(ids, pipe.execute(), strict=True):
        row: dict[str, Any] = {"id": b, **{f: text(v) for f, v in zip(BATCH_FIELDS, vals, strict=True)}}
        if not row["module"]:  # expired between SCAN and HMGET
            continue
        for f in ("created", "completed", "finished", "n_expected", "reported", "ok", "none", "failed"):
            row[f] = int(row[f]) if row[f] else None
        rows.append(row)
    rows.sort(key=lambda x: -(x["created"] or 0))
    return rows


def batch_details(r: Any, prefix: str, ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """The whole hash of each batch in `ids` (one round trip)."""
    if not ids:
        return {}
    k = Keys(prefix)
    pipe = r.pipeline(transaction=False)
    for b in ids:
        pipe.hgetall(k.batch(b))
    return {b: {text(f): text(v) for f, v in h.items()} for b, h in zip(ids, pipe.execute(), strict=True)}


def station_batches(r: Any, prefix: str, station: str, limit: int = 200) -> list[dict[str, Any]]:
    """The newest batches that expected `station`, with its entry (ok | none | failed:<reason>)
    and result: SCAN + two pipelines, independent of how many stations there are."""
    rows = [b for b in batch_summaries(r, prefix, batch_ids(r, prefix)) if f'"{station}"' in b["expected"]][:limit]
    if not rows:
        return []
    k = Keys(prefix)
    pipe = r.pipeline(transaction=False)
    for b in rows:
        pipe.hmget(k.batch(b["id"]), [f"e:{station}", f"r:{station}"])
    for b, (entry, result) in zip(rows, pipe.execute(), strict=True):
        b["entry"] = text(entry) or "-"
        b["result"] = text(result) or None
    return rows

