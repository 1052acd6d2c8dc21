"""Writing one poll's records (`WindowStore.apply`): the records sorted into stations, each
station's unit built only when its script call is, calls sent as soon as they are built
(store.streamed) and their replies accounted while Redis runs the later ones.

One `PollWrite` per poll holds what the passes share: the stream and alias indexes the
script calls refer to, the order seconds that became due, the record triggers with their
poll position, and the calls sent so far.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from parsers.catalogue import TopicSpec
from parsers.records import Record, Source
from store.codec import encode_item, source_from
from store.streamed import run_pipelined, run_streamed

if TYPE_CHECKING:
    from store.windows import WindowStore

FIRST_CALL_RECORDS = 32  # records of a poll's first script call; each next one CALL_GROWTH times more
CALL_GROWTH = 2


class StoreError(Exception):
    """A record the store cannot place (unknown alias, bad hour key): a bug upstream, not bad input."""


@dataclass(frozen=True, slots=True)
class Trigger:
    """New data for a station (None: a global window, new data for every known station)."""

    station_id: str | None
    alias: str
    source: Source


@dataclass
class ApplyResult:
    triggers: list[Trigger] = field(default_factory=list)
    applied: int = 0
    superseded: int = 0  # valid records that lost to newer stored data
    #: topic -> device records already older than the TTL when written (stored and hidden while
    #: stale, or superseded; also counted in applied or superseded)
    stale_on_arrival: dict[str, int] = field(default_factory=dict)
    replays_skipped: int = 0
    hours_ignored: int = 0
    late_orders: int = 0
    seconds_evicted: int = 0  # closed order seconds evicted before every module received them


class _Unit:
    """One station's (or one global alias's) records of a poll, as apply.lua takes them."""

    __slots__ = ("station", "meta", "keys", "recs")

    def __init__(self, station: str | None, meta: str) -> None:
        self.station = station
        self.meta = meta
        self.keys: list[str] = []  # Keys.window_keys of each alias, in first-appearance order
        self.recs: list[Any] = []  # 5 fields per record: stream offset ts key item

    def __len__(self) -> int:  # records
        return len(self.recs) // 5

    def sis(self) -> list[int]:
        """The stream index of each record (the first of its 5 fields)."""
        return self.recs[0::5]



#: per stream index: (alias index, its 7 fields, 'topic:partition'), for the call heads
Head = list[tuple[int, list[Any], str]]


class PollWrite:
    """The write of one poll; `run()` once. A StoreError found while building (a record the
    store cannot place) leaves the calls already sent applied; a retry skips them as replays."""

    def __init__(self, store: WindowStore, messages: Sequence[tuple[Source, list[Record]]], now_ms: int) -> None:
        self.store = store
        self.messages = messages
        self.now_ms = int(now_ms)
        self.result = ApplyResult()
        self.streams: dict[tuple[str, str], int] = {}  # (alias, 'topic:partition') -> index from 1
        self.stream_info: list[tuple[TopicSpec, str]] = [(None, "")]  # type: ignore[list-item]  # index -> (spec, topic)
        self.aliases: dict[str, int] = {}
        self.alias_specs: list[TopicSpec] = []  # alias index - 1 -> spec
        self.head: Head = [(0, [], "")]
        self.due: dict[str, dict[str, int]] = defaultdict(dict)
        self.keyed: list[tuple[int, int, Trigger]] = []  # record triggers with their poll position
        self.msg_info: list[Any] = [None] * len(messages)  # per message: its strings, built once
        self.calls: list[tuple[list[_Unit], list[Any]]] = []
        self.accounted: set[int] = set()
        self.closed: list[Trigger] = []
        self.buckets = self._bucket()
        self.stations = [k for k in self.buckets if type(k) is not tuple]  # global units are ('g', alias)

    def _bucket(self) -> dict[Any, list[tuple[int, int, Record]]]:
        """Pass 1: records to units, in first-appearance order: unit key (station, or
        ('g', alias)) -> [(message index, record index, record)]."""
        by_alias = self.store.catalogue.by_alias
        buckets: dict[Any, list[tuple[int, int, Record]]] = {}
        for i, (src, records) in enumerate(self.messages):
            if src.timestamp_ms < 0 or src.offset < 0:  # the scripts compare both as decimal strings
                raise StoreError(f"{src.coords()}: negative timestamp {src.timestamp_ms} or offset")
            for j, rec in enumerate(records):
                spec = by_alias.get(rec.alias)
                if spec is None:
                    raise StoreError(f"unknown alias {rec.alias!r} in {src.coords()}")
                ukey: Any = ("g", rec.alias) if spec.kind == "global" else rec.station_id
                if ukey is None:
                    raise StoreError(f"record of {src.coords()} ({rec.alias}) has no station id")
                b = buckets.get(ukey)
                if b is None:
                    b = buckets[ukey] = []
                b.append((i, j, rec))
        return buckets

    def _message(self, i: int) -> tuple[str, str, int, str, str]:
        """('topic:partition', coords, timestamp, offset text, timestamp text) of message i."""
        m = self.msg_info[i]
        if m is None:
            src = self.messages[i][0]
            part = f"{src.topic}:{src.partition}"
            m = self.msg_info[i] = (part, f"{part}:{src.offset}", int(src.timestamp_ms), str(src.offset),
                                    str(int(src.timestamp_ms)))
        return m

    def _stream(self, alias: str, part: str, topic: str) -> tuple[int, TopicSpec]:
        """The stream index of (alias, partition), registered with its alias on first use."""
        si = self.streams.get((alias, part))
        if si is not None:
            return si, self.stream_info[si][0]
        spec = self.store.catalogue.by_alias[alias]
        if alias not in self.aliases:
            self.aliases[alias] = len(self.aliases) + 1
            self.alias_specs.append(spec)
        si = self.streams[(alias, part)] = len(self.streams) + 1
        self.stream_info.append((spec, topic))
        self.head.append((self.aliases[alias], self.store._alias_def(spec), part))
        return si, spec

    def build(self, ukey: Any, entries: list[tuple[int, int, Record]]) -> _Unit:
        """Pass 2, one unit: stream indexes, record keys and script fields of its records."""
        keys = self.store.keys
        if type(ukey) is tuple:
            sid: str | None = None
            unit = _Unit(None, keys.global_meta(ukey[1]))
        else:
            sid = ukey
            unit = _Unit(ukey, keys.meta(ukey))
        recs = unit.recs
        seen: set[tuple[int, str]] = set()
        with_keys: set[str] = set()
        for i, j, rec in entries:
            src, records = self.messages[i]
            part, coords, ts, off_s, ts_s = self._message(i)
            alias = rec.alias
            si, spec = self._stream(alias, part, src.topic)
            kind = spec.kind
            if alias not in with_keys:  # apply.lua takes an alias's keys where it first meets it
                with_keys.add(alias)
                unit.keys += keys.window_keys(self.store.window_kind(spec), alias, sid)
            key = rec.key if kind == "devices" and rec.key else self.store._record_key(spec, rec, src)
            recs += (si, off_s, ts_s, key, (ts, coords, rec.payload))
            if kind == "orders":
                self.due[alias].setdefault(f"{sid}|{key}", self.now_ms + int(spec.order_close_s * 1000))
            elif len(records) == 1:
                self.keyed.append((i, j, Trigger(sid, alias, src)))
            elif (i, alias) not in seen:  # one trigger per (station, alias) of a message
                seen.add((i, alias))
                self.keyed.append((i, j, Trigger(sid, alias, src)))
        return unit

    def commands(self, flushed: dict[tuple[str, str], int], forgotten: Any) -> Iterator[tuple[Any, ...]]:
        """Every command of the poll, built while Redis already runs the ones sent before."""
        keys, store = self.store.keys, self.store
        for (group, fld), n in flushed.items():
            yield ("HINCRBY", keys.counters(group), fld, n)
        sha = store.scripts["apply.lua"].sha
        station_units = (self.build(k, self.buckets[k]) for k in self.stations)
        global_units = (self.build(k, b) for k, b in self.buckets.items() if type(k) is tuple)
        for call in self.group(station_units, global_units):
            self.calls.append(call)
            yield ("EVALSHA", sha, *call[1])
        by_key: dict[str, list[Any]] = {}  # the index buckets (one key each on one Redis)
        for st in self.stations:
            by_key.setdefault(keys.stations_of(st), []).extend((self.now_ms, st))
        for key, pairs in by_key.items():
            yield ("ZADD", key, "GT", *pairs)
        for alias, members in self.due.items():
            by_key = {}
            for m, sc in members.items():
                by_key.setdefault(keys.orders_due_of(alias, m.rpartition("|")[0]), []).extend((sc, m))
            for key, pairs in by_key.items():
                yield ("ZADD", key, "NX", *pairs)
        yield from store.closer.removals(forgotten)  # after the ZADDs: a second opened and closed since

    def run(self) -> ApplyResult:
        store = self.store
        flushed = store.tally.drain()
        forgotten = store.closer.take_forgotten()  # due members of seconds closed by earlier calls
        first = len(flushed)

        def on_reply(i: int, reply: Any) -> None:
            # a script's reply is accounted while Redis still runs the later calls
            j = i - first
            if 0 <= j < len(self.calls) and not isinstance(reply, Exception):
                self.account(self.calls[j][0], reply)
                self.accounted.add(j)

        try:
            run = run_pipelined if store.cluster else run_streamed
            replies = run(store.r, self.commands(flushed, forgotten), on_reply)
            # re-runs the calls a Redis restart answered with NOSCRIPT; raises any other error
            replies = store._finish(replies, "apply.lua", [c[1] for c in self.calls], first=first)
        except Exception:
            # the caller retries the poll; keep the counts for then (the calls that did apply
            # stay counted: their retry counts as replays)
            store.tally.restore(flushed)
            store.closer.restore(forgotten)
            raise
        for j, (group, _) in enumerate(self.calls):
            if j not in self.accounted:
                self.account(group, replies[j])
        # record triggers in poll order, then order-close triggers station by station
        self.keyed.sort()  # (message, record) positions are unique: the Triggers are never compared
        self.result.triggers.extend(t for _, _, t in self.keyed)
        rank = {sid: i for i, sid in enumerate(self.stations)}
        self.closed.sort(key=lambda t: rank.get(t.station_id, -1))
        self.result.triggers.extend(self.closed)
        return self.result

    def group(self, station_units: Iterable[_Unit], global_units: Iterable[_Unit]
              ) -> Iterator[tuple[list[_Unit], list[Any]]]:
        """Units -> script calls (built one at a time): one per unit under Redis Cluster, else
        units packed up to `call_records` records per call, the first calls smaller (global
        windows apart: their meta never expires)."""
        store, now_ms, head = self.store, self.now_ms, self.head
        limit = 1 if store.cluster else store.call_records
        # calls grow from FIRST_CALL_RECORDS by CALL_GROWTH up to `limit`: Redis runs a call
        # several times slower than Python builds one of the same size, so it never waits
        size = min(limit, FIRST_CALL_RECORDS)
        for units, ret in ((station_units, store.meta_retention), (global_units, "")):
            group: list[_Unit] = []
            n = 0
            for u in units:
                group.append(u)
                n += len(u)
                if n >= size:
                    yield group, call_args(group, now_ms, ret, head)
                    group, n, size = [], 0, min(limit, size * CALL_GROWTH)
            if group:
                yield group, call_args(group, now_ms, ret, head)

    def account(self, group: list[_Unit], reply: list[Any]) -> None:
        """Count one call's per-record statuses, evicted seconds and closed seconds."""
        status, closes, evicted = reply
        status = status.decode() if isinstance(status, bytes) else status
        sis = [si for u in group for si in u.sis()]
        for (st, si), n in Counter(zip(status, sis, strict=True)).items():
            spec, topic = self.stream_info[si]
            self._count_status(st, spec, topic, n)
        for j in range(0, len(evicted), 2):
            n = int(evicted[j + 1])
            spec = self.alias_specs[int(evicted[j]) - 1]
            self.result.seconds_evicted += n
            self.store.tally.add(f"topic:{spec.topic}", "seconds_evicted", n)
        if closes:
            self._closed_seconds(group, sis, closes)

    def _count_status(self, st: str, spec: TopicSpec, topic: str, n: int) -> None:
        """`n` records of one stream with apply.lua status `st` (see `_STATUS`)."""
        group_name = f"topic:{topic}"
        if st == "i" and spec.kind == "global":  # a date outside the window
            self.store.tally.add(group_name, "keys_ignored", n)
            return
        fields, counters = _STATUS[st]
        for f in fields:
            setattr(self.result, f, getattr(self.result, f) + n)
        for c in counters:
            self.store.tally.add(group_name, c, n)
        if st in ("o", "z"):
            self.result.stale_on_arrival[topic] = self.result.stale_on_arrival.get(topic, 0) + n

    def _closed_seconds(self, group: list[_Unit], sis: list[int], closes: list[Any]) -> None:
        """The order seconds one call closed: their triggers, and their due-index members
        forgotten (nothing is left to close)."""
        ends = list(accumulate(len(u) for u in group))
        for j in range(0, len(closes), 6):
            idx, _seq, sec, _late, osrc, ots = closes[j:j + 6]
            i = int(idx) - 1
            station = group[bisect_right(ends, i)].station
            o = osrc.decode() if isinstance(osrc, bytes) else osrc
            alias = self.stream_info[sis[i]][0].alias
            self.closed.append(Trigger(station, alias, source_from(o, int(ots))))
            assert station is not None, "order seconds belong to a station"
            self.store.closer.forget(alias, station, sec.decode() if isinstance(sec, bytes) else str(sec))


#: apply.lua's per-record status -> (ApplyResult fields, per-topic counters) it adds to:
#: applied, superseded (lost to newer stored data), replay skipped, hour outside the window,
#: late order (applied), device stale on arrival and stored (o) or superseded (z)
_STATUS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "a": (("applied",), ("records_applied",)),
    "s": (("superseded",), ("records_superseded",)),
    "r": (("replays_skipped",), ("replays_skipped",)),
    "i": (("hours_ignored",), ("hours_ignored",)),
    "l": (("late_orders", "applied"), ("late_orders", "records_applied")),
    "o": (("applied",), ("stale_on_arrival", "records_applied")),
    "z": (("superseded",), ("stale_on_arrival", "records_superseded")),
}


def call_args(group: list[_Unit], now_ms: int, ret: str, head: Head) -> list[Any]:
    """The arguments of one apply.lua call: its units' keys (each unit's meta, then the
    window keys of its aliases), the alias and stream definitions they use, then each unit's
    records."""
    keys: list[Any] = []
    for u in group:
        keys.append(u.meta)
        keys += u.keys
    args: list[Any] = [len(keys), *keys, now_ms, ret]
    used = sorted({si for u in group for si in u.sis()})
    defs = {head[si][0]: head[si][1] for si in used}
    args.append(len(defs))
    for ai, d in defs.items():
        args.append(ai)
        args += d
    args.append(len(used))
    for si in used:
        args += (si, head[si][0], head[si][2])
    for u in group:
        recs = u.recs
        if recs and type(recs[4]) is tuple:  # items are encoded here, call by call
            recs[4::5] = [encode_item(*x) for x in recs[4::5]]
        args.append(len(u))
        args += recs
    return args
