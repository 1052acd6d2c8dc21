"""The expected state of the store, computed from the produced messages alone.

The fault tests compare what the real processes left in Redis with this model, which only
uses the pure parsers (`parsers.envelopes.parse_message`) and the window rules of
`parsers.windows`. Nothing here talks to Redis or Kafka.

Determinism: newest record wins, and on a timestamp tie the later *arrival* wins, so two
records of one (station, topic) with equal timestamps on two partitions may legally end in
either order. The fault tests therefore route every single-station message of a station to
one partition (`partition_for`), which makes every window a function of the messages. Two
things stay wall-clock dependent by design and are compared accordingly:

- car orders: how orders group into seconds depends on when the 2 s closer ran (spec §6.1),
  so the model keeps each station's orders in arrival order and the test compares the
  orders of all closed seconds, oldest first, plus per-second invariants;
- device expiry (records older than the TTL are removed on a later write): the tests give
  the device topics a TTL longer than the test, so nothing expires.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from parsers import windows as w
from parsers.catalogue import Catalogue, TopicSpec
from parsers.envelopes import parse_message
from parsers.records import ParseError, Record, Source

Item = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Produced:
    """One message as it landed in Kafka."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None


@dataclass(frozen=True, slots=True)
class ExpectedDead:
    topic: str
    partition: int
    offset: int
    element_index: int | None
    reason: str


def station_of(value: bytes | None) -> str | None:
    """The top-level stationId of a single-station message, if it has a usable one."""
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    sid = obj.get("stationId") if isinstance(obj, dict) else None
    return sid if isinstance(sid, str) else None


def partition_for(spec: TopicSpec, value: bytes | None, partitions: int, fallback: int) -> int:
    """Single-station messages of one station always go to the same partition (see module
    docstring); anything else goes to `fallback` (callers spread it round-robin)."""
    if spec.envelope == "single":
        sid = station_of(value)
        if sid is not None:
            return zlib.crc32(sid.encode()) % partitions
    return fallback % partitions


@dataclass
class Model:
    """Windows per (station, alias), global windows, expected dead letters, order arrivals."""

    catalogue: Catalogue
    max_depth: int = 32
    latest: dict[tuple[str, str], Item] = field(default_factory=dict)
    keyed: dict[tuple[str, str], dict[str, Item]] = field(default_factory=dict)  # hourly / devices
    appended: dict[tuple[str, str], list[Item]] = field(default_factory=dict)
    global_windows: dict[str, dict[str, Item]] = field(default_factory=dict)
    orders: dict[str, list[Item]] = field(default_factory=dict)  # station -> orders in arrival order
    dead: list[ExpectedDead] = field(default_factory=list)
    stations: set[str] = field(default_factory=set)
    messages: int = 0
    records: int = 0

    def add_all(self, produced: Iterable[Produced]) -> Model:
        """Apply messages; each partition's messages must come in offset order."""
        for p in produced:
            self.add(p)
        return self

    def add(self, p: Produced) -> None:
        spec = self.catalogue.topic(p.topic)
        self.messages += 1
        try:
            parsed = parse_message(spec, p.value, max_depth=self.max_depth)
        except ParseError as e:
            self.dead.append(ExpectedDead(p.topic, p.partition, p.offset, e.element_index, e.reason))
            return
        for rej in parsed.rejections:
            self.dead.append(ExpectedDead(p.topic, p.partition, p.offset, rej.element_index, rej.reason))
        src = Source(p.topic, p.partition, p.offset, p.timestamp_ms)
        for rec in parsed.records:
            self._apply(spec, rec, src)

    def _apply(self, spec: TopicSpec, rec: Record, src: Source) -> None:
        self.records += 1
        item = w.make_item(src.timestamp_ms, src.coords(), rec.payload)
        if spec.kind == "global":
            win = self.global_windows.get(spec.alias, {})
            self.global_windows[spec.alias], _ = w.upsert_global(win, rec.key, item, spec.window_size)
            return
        station = rec.station_id
        assert station is not None
        self.stations.add(station)
        key = (station, spec.alias)
        if spec.kind == "latest":
            self.latest[key] = w.apply_latest(self.latest.get(key), item)
        elif spec.kind == "append":
            self.appended[key] = w.append(self.appended.get(key, []), item, spec.window_size)
        elif spec.kind == "hourly":
            self.keyed[key], _ = w.upsert_hourly(self.keyed.get(key, {}), rec.key, item, spec.window_size)
        elif spec.kind == "devices":
            self.keyed[key] = w.upsert_device(self.keyed.get(key, {}), rec.key, item, spec.window_size)
        elif spec.kind == "orders":
            self.orders.setdefault(station, []).append(item)
        else:  # pragma: no cover - the catalogue only has the kinds above
            raise AssertionError(f"unknown kind {spec.kind}")

    # ---- expectations -----------------------------------------------------------------------
    def expected(self, station: str, alias: str) -> Any:
        """The window as `WindowStore.read_windows` returns it (orders: see `order_sources`)."""
        spec = self.catalogue.by_alias[alias]
        key = (station, alias)
        if spec.kind == "latest":
            return self.latest.get(key)
        if spec.kind == "append":
            return self.appended.get(key, [])
        if spec.kind in ("hourly", "devices"):
            return self.keyed.get(key, {})
        if spec.kind == "global":
            return self.global_windows.get(alias, {})
        return self.order_sources(station)

    def order_sources(self, station: str) -> list[str]:
        return [o["src"] for o in self.orders.get(station, [])]

    def dead_counts(self) -> Counter[str]:
        return Counter(d.reason for d in self.dead)


def stored_order_sources(seconds: list[dict[str, Any]] | None) -> list[str]:
    """The orders of every stored closed second, oldest second first, in arrival order."""
    return [o["src"] for sec in sorted(seconds or [], key=lambda s: s["seq"]) for o in sec["orders"]]


def order_second_problems(seconds: list[dict[str, Any]] | None) -> list[str]:
    """Spec §6.1 invariants of closed seconds: every order sits in its own second, sequence
    numbers are unique and increasing, and on-time seconds strictly increase."""
    problems = []
    seqs = [s["seq"] for s in seconds or []]
    if len(set(seqs)) != len(seqs):
        problems.append(f"duplicate sequence numbers {sorted(seqs)}")
    last_on_time = None
    for sec in sorted(seconds or [], key=lambda s: s["seq"]):
        for o in sec["orders"]:
            if o["ts"] // 1000 != sec["second"]:
                problems.append(f"order {o['src']} (ts {o['ts']}) in second {sec['second']}")
        if not sec["late"]:
            if last_on_time is not None and sec["second"] <= last_on_time:
                problems.append(f"on-time second {sec['second']} after {last_on_time}")
            last_on_time = sec["second"]
    return problems
