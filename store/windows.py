"""The window store: idempotent writes of parsed records and one-round-trip reads of a station.

Writes: one round trip per `apply()` (store.streamed: each script call is sent as soon as it
is built, so Redis works on the first while Python encodes the next). Each station's records
of the poll (in offset order) go whole into one script call; on a single Redis a call carries
many stations (`call_records` records at most), while `cluster=True` keeps one call per
station and per global alias so that a script never touches another station's slot.
Arguments are flat: per record its stream index, offset, timestamp, key and the encoded item.
Idempotency lives inside the scripts: a per (station or global alias, topic, partition)
offset high-water mark in the meta hash is checked and advanced atomically with the write,
and every upsert follows "newest record wins" (equal timestamps: later arrival wins).

Triggers are recomputed from the records, never from what the script changed, so a replayed
message yields the same triggers as its first delivery (spec §6.8); order triggers are the
seconds a message closed, which the script remembers per message for the same reason.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import redis

from parsers.catalogue import Catalogue, TopicSpec
from parsers.records import Record, Source
from store.codec import decode_closed_second, decode_item
from store.connection import is_cluster
from store.counters import Tally
from store.job_writes import JobWrites
from store.keys import keys_for
from store.memo import HourlyMemo
from store.order_closer import OrderCloser
from store.poll_write import ApplyResult, PollWrite, StoreError, Trigger
from store.scripts import LuaScript, ScriptPipeline, resend_noscript

HOUR_FMT = "%Y-%m-%d %H:%M:%S"


class StationWindows(dict):
    """What `read_station` returns: name -> window, plus ("car_order", module) -> closed seconds
    after that module's cursor (None when the station has no closed second stored at all).
    `windows_for(module)` gives the mapping `build_input` takes."""

    def __init__(self, catalogue: Catalogue, station: str, data: Mapping[Any, Any]) -> None:
        super().__init__(data)
        self.catalogue = catalogue
        self.station = station

    def windows_for(self, module: str) -> dict[str, Any]:
        spec = self.catalogue.module(module)
        out: dict[str, Any] = {}
        for name in spec.all_inputs:
            t = self.catalogue.by_alias.get(name)
            if t is not None and t.kind == "orders":
                # None: no closed second stored (the input is missing); []: none new for `module`
                out[name] = self.get((name, module))
            else:
                out[name] = self.get(name)
        return out


@functools.lru_cache(maxsize=4096)
def hour_cutoff(hour: str, window_size: int) -> str:
    """The oldest hour kept when `hour` is the newest stored one."""
    try:
        h = datetime.strptime(hour, HOUR_FMT)
    except ValueError as e:
        raise StoreError(f"hourly key {hour!r} is not 'YYYY-MM-DD HH:00:00'") from e
    return (h - timedelta(hours=window_size - 1)).strftime(HOUR_FMT)


def _closed(s: dict[str, Any]) -> dict[str, Any]:
    return {"seq": s["seq"], "second": s["second"], "late": s["late"], "orders": s["orders"]}


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else str(int(seconds * 1000))


def _load(name: str) -> str:
    base = resources.files("store") / "lua"
    common = (base / "common.lua").read_text()
    return common + "\n" + (base / name).read_text()


#: the window scripts, each with common.lua in front
_SCRIPT_NAMES = ("apply.lua", "close_orders.lua", "read_orders.lua")


class WindowStore:
    def __init__(self, r: redis.Redis, catalogue: Catalogue, prefix: str = "sf", *,
                 outputs_keep: int = 1, cluster: bool = False, call_records: int = 200) -> None:
        self.r = r
        self.catalogue = catalogue
        self.keys = keys_for(r, prefix)
        self.outputs_keep = max(1, int(outputs_keep))
        self.scripts = {n: LuaScript(n, _load(n)) for n in _SCRIPT_NAMES}
        self.writes = JobWrites(catalogue, self.keys, self.outputs_keep)  # outputs and cursors
        self._load_scripts()
        self.cluster = bool(cluster) or is_cluster(r)
        self.call_records = max(1, int(call_records))
        self._defs: dict[str, list[Any]] = {}
        self.tally = Tally()
        rets = [t.retention_s for t in catalogue.topics]
        self.meta_retention = "" if any(x is None for x in rets) else _ms(max(rets))  # type: ignore[type-var]
        self._order_modules = {
            t.alias: ",".join(m for m in catalogue.modules_using(t.alias)
                              if catalogue.by_module[m].runs == "local")
            for t in catalogue.topics if t.kind == "orders"
        }
        self.closer = OrderCloser(r, catalogue, self.keys, self.scripts["close_orders.lua"], self.tally,
                                  self._order_modules,
                                  lambda replies, args, first: self._finish(replies, "close_orders.lua", args, first),
                                  self._flush_into, Trigger)

    # ---- writing -----------------------------------------------------------------------
    def _alias_def(self, spec: TopicSpec) -> list[Any]:
        """The 7 per-alias fields of apply.lua: alias kind nkeys retention cap x1 x2; nkeys is
        how many KEYS the alias takes in each unit that has records of it (Keys.window_keys)."""
        d = self._defs.get(spec.alias)
        if d is not None:
            return d
        kind = self.window_kind(spec)
        cap, x1, x2 = spec.window_size, "", ""
        if kind == "output":
            cap = self.outputs_keep
        elif kind == "devices":
            x1 = _ms(spec.ttl_s)
        elif kind == "orders":
            x1, x2 = str(int(spec.order_close_s * 1000)), self._order_modules.get(spec.alias, "")
        elif kind not in ("global", "latest", "append", "hourly"):  # pragma: no cover - the catalogue validates kinds
            raise StoreError(f"unknown window kind {kind!r}")
        nkeys = len(self.keys.window_keys(kind, spec.alias, "_"))
        d = self._defs[spec.alias] = [spec.alias, kind, nkeys, _ms(spec.retention_s), cap, x1, x2]
        return d

    @staticmethod
    def window_kind(spec: TopicSpec) -> str:
        """apply.lua's kind of an alias: the catalogue's, or `output` for a module's outputs."""
        return "output" if spec.is_module_output else spec.kind

    @staticmethod
    def _record_key(spec: TopicSpec, rec: Record, src: Source) -> str:
        kind = spec.kind
        if kind == "orders":
            return str(src.timestamp_ms // 1000)
        if kind == "hourly":
            if not rec.key:
                raise StoreError(f"hourly record of station {rec.station_id}, {src.coords()} has no hour")
            return f"{rec.key}|{hour_cutoff(rec.key, spec.window_size)}"
        if kind in ("devices", "global") and not rec.key:
            raise StoreError(f"{kind} record of station {rec.station_id}, {src.coords()} has no key")
        return rec.key or ""

    def apply(self, messages: Sequence[tuple[Source, list[Record]]], now_ms: int) -> ApplyResult:
        """Write every record of one poll (store.poll_write); see the module docstring for the
        guarantees. The first script call is small, so Redis starts while Python still builds
        and encodes the rest."""
        return PollWrite(self, messages, now_ms).run()

    def _load_scripts(self) -> None:
        for s in self.scripts.values():
            s.load(self.r)

    def _execute(self, pipe: Any, script: str, script_args: list[list[Any]], first: int) -> list[Any]:
        return self._finish(pipe.execute(raise_on_error=False), script, script_args, first)

    def _finish(self, replies: list[Any], script: str, script_args: list[list[Any]], first: int) -> list[Any]:
        """The replies of `script`'s calls (from index `first` of a pipeline's replies); calls
        lost to a Redis restart are re-sent (store.scripts.resend_noscript: an EVALSHA refused
        with NOSCRIPT changed nothing). `script_args` are each call's numkeys, keys and args."""
        s = self.scripts[script]
        calls = [(first + i, s, (s.sha, *a)) for i, a in enumerate(script_args)]
        return resend_noscript(self.r, replies, calls)[first:first + len(script_args)]

    def flush_counters(self) -> None:
        """Write counters gathered by the last calls (each apply also flushes the previous one's)."""
        pipe = self.r.pipeline(transaction=False)
        counts = self._flush_into(pipe)
        if counts:
            try:
                pipe.execute()
            except Exception:
                self.tally.restore(counts)
                raise

    def _flush_into(self, pipe: Any) -> dict[tuple[str, str], int]:
        counts = self.tally.drain()
        for (group, fld), n in counts.items():
            pipe.hincrby(self.keys.counters(group), fld, n)
        return counts

    # ---- orders ------------------------------------------------------------------------
    def close_expired_orders(self, now_ms: int, limit: int = 1000) -> list[Trigger]:
        """Close every open order second whose deadline passed (store.order_closer; `limit`
        index members per round trip); safe with many concurrent callers."""
        return self.closer.close_due(now_ms, limit)

    def orders_due_count(self, until_ms: int) -> int:
        """Order seconds still in the due index with a deadline at or before `until_ms`."""
        return self.closer.count_due(until_ms)

    def advance_cursor(self, station: str, module: str, alias: str, seq: int) -> int:
        """Record that `module` received every closed second up to `seq` (never moves back)."""
        spec = self.catalogue.topic(alias)
        sp = ScriptPipeline(self.r)
        at = self.writes.queue(sp, station, [], [(module, spec.alias, int(seq))], 0)
        return int(sp.execute()[at][0])  # type: ignore[index]

    # ---- reading -----------------------------------------------------------------------
    def present(self, stations: Iterable[str], names: Iterable[str],
                now_ms: int | None = None) -> dict[str, set[str]]:
        """Which of `names` (aliases or module names) hold an unexpired value per station,
        in one round trip (spec §6.5 "present")."""
        now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
        stations = list(stations)
        names = list(dict.fromkeys(names))
        pipe = self.r.pipeline(transaction=False)
        plan: list[tuple[str | None, str]] = []
        for name in names:
            spec = self._spec_of(name)
            if spec.kind == "global":
                pipe.hlen(self.keys.global_window(spec.alias))
                plan.append((None, name))
        for sid in stations:
            for name in names:
                spec = self._spec_of(name)
                k = self.keys
                if spec.kind == "global":
                    continue
                if spec.is_module_output:
                    pipe.exists(k.output(sid, spec.alias))
                elif spec.kind in ("latest", "append"):
                    pipe.exists(k.latest(sid, spec.alias))
                elif spec.kind == "hourly":
                    pipe.exists(k.hourly(sid, spec.alias))
                elif spec.kind == "devices":
                    if spec.ttl_s is None:
                        pipe.zcard(k.devices_ts(sid, spec.alias))
                    else:
                        pipe.zcount(k.devices_ts(sid, spec.alias), now_ms - int(spec.ttl_s * 1000), "+inf")
                elif spec.kind == "orders":
                    pipe.zcard(k.orders_closed(sid, spec.alias))
                plan.append((sid, name))
        replies = pipe.execute() if plan else []
        out: dict[str, set[str]] = {s: set() for s in stations}
        global_present: set[str] = set()
        for (owner, name), v in zip(plan, replies, strict=True):
            if not int(v):
                continue
            if owner is None:
                global_present.add(name)
            else:
                out[owner].add(name)
        for s in out:
            out[s] |= global_present
        return out

    def _spec_of(self, name: str) -> TopicSpec:
        spec = self.catalogue.by_alias.get(name)
        if spec is None:
            raise StoreError(f"unknown input or module {name!r}")
        return spec

    def read_station(self, station: str, module_names: Iterable[str], now_ms: int | None = None,
                     memo: HourlyMemo | None = None) -> StationWindows:
        """Every input, global window and dep output of `module_names` for `station`, plus each
        module's undelivered closed order seconds, in one round trip. Windows no module needs
        are not read. `now_ms` is accepted for symmetry; visibility filtering is the builders'.
        `memo` (a worker's `HourlyMemo`): hourly and global windows unchanged since their last
        read are not decoded again (and keep their built views, parsers.inputs)."""
        modules = [self.catalogue.module(m) for m in module_names]
        names = list(dict.fromkeys(n for m in modules for n in m.all_inputs))
        users = {n: [m.name for m in modules if n in m.inputs] for n in names}
        return StationWindows(self.catalogue, station, self._read(station, names, users, memo))

    def read_stations(self, wanted: Mapping[str, Sequence[str]], memo: HourlyMemo | None = None
                      ) -> dict[str, StationWindows]:
        """`read_station` of several stations (station -> module names) in one round trip
        (on Redis Cluster one pipeline, each station's keys in its own slot). A global window
        (the calendar) is read and decoded once, for the first station that needs it, and the
        same window handed to the others (its views are copied per module, parsers.inputs)."""
        sp = ScriptPipeline(self.r)
        plans = {}
        first_of: dict[str, str] = {}  # global window -> the station that reads it
        for station, module_names in wanted.items():
            modules = [self.catalogue.module(m) for m in module_names]
            names = list(dict.fromkeys(n for m in modules for n in m.all_inputs))
            users = {n: [m.name for m in modules if n in m.inputs] for n in names}
            shared = [n for n in names if n in first_of]
            at = len(sp)
            plans[station] = (at, self._queue_fetch(sp, station, [n for n in names if n not in first_of], users),
                              shared)
            for n in names:
                spec = self._spec_of(n)
                if n not in first_of and spec.kind == "global" and not spec.is_module_output:
                    first_of[n] = station
        replies = self._fetch_replies(sp)
        data: dict[str, dict[Any, Any]] = {}
        for station, (at, plan, shared) in plans.items():
            data[station] = self._decode(station, plan, replies[at:at + len(plan)], memo)
            for n in shared:
                data[station][n] = data[first_of[n]][n]
        return {station: StationWindows(self.catalogue, station, d) for station, d in data.items()}

    def read_windows(self, station: str, names: Iterable[str]) -> dict[Any, Any]:
        """Windows by alias or module name (for `inspect`); orders come back as every stored
        closed second under the alias, ignoring cursors."""
        return self._read(station, list(dict.fromkeys(names)), {})

    def _read(self, station: str, names: list[str], users_of: Mapping[str, list[str]],
              memo: HourlyMemo | None = None) -> dict[Any, Any]:
        plan, replies = self._fetch(station, names, users_of)
        return self._decode(station, plan, replies, memo)

    def _fetch(self, station: str, names: list[str], users_of: Mapping[str, list[str]]
               ) -> tuple[list[tuple[Any, str]], list[Any]]:
        """The read round trip: (what each reply is, the raw replies)."""
        sp = ScriptPipeline(self.r)  # read_orders.lua lost to a restart is re-sent there
        plan = self._queue_fetch(sp, station, names, users_of)
        return plan, self._fetch_replies(sp)

    @staticmethod
    def _fetch_replies(sp: ScriptPipeline) -> list[Any]:
        """The replies of a read pipeline (one function, so a profile sees the read apart)."""
        return sp.execute()

    def _queue_fetch(self, sp: ScriptPipeline, station: str, names: list[str], users_of: Mapping[str, list[str]]
                     ) -> list[tuple[Any, str]]:
        """Queue the reads of `names` for `station`; what each reply will be, in order."""
        pipe = sp.pipe
        plan: list[tuple[Any, str]] = []
        k = self.keys
        for name in names:
            spec = self._spec_of(name)
            if spec.is_module_output:
                pipe.lindex(k.output(station, spec.alias), 0)
                plan.append((name, "output"))
            elif spec.kind == "latest":
                pipe.get(k.latest(station, spec.alias))
                plan.append((name, "latest"))
            elif spec.kind == "append":
                pipe.lrange(k.append(station, spec.alias), 0, -1)
                plan.append((name, "append"))
            elif spec.kind == "hourly":
                pipe.hgetall(k.hourly(station, spec.alias))
                plan.append((name, "hourly"))
            elif spec.kind == "devices":
                pipe.hgetall(k.devices(station, spec.alias))
                plan.append((name, "hash"))
            elif spec.kind == "global":
                pipe.hgetall(k.global_window(spec.alias))
                plan.append((name, "global"))
            elif spec.kind == "orders":
                users = list(users_of.get(name, []))
                sp.call(self.scripts["read_orders.lua"],
                        (k.orders_closed(station, spec.alias), k.orders_state(station, spec.alias)), users)
                plan.append(((name, tuple(users)), "orders"))
        return plan

    @staticmethod
    def _decode(station: str, plan: list[tuple[Any, str]], replies: list[Any],
                memo: HourlyMemo | None = None) -> dict[Any, Any]:
        """Raw replies -> plain window structures (docs/internals.md). With `memo`, an hourly
        or global window comes back as a `store.memo.MemoWindow` (decoded on first access
        only), carrying the views built from the same bytes by an earlier job."""
        data: dict[Any, Any] = {}
        for (name, how), v in zip(plan, replies, strict=True):
            if how in ("output", "latest"):
                data[name] = decode_item(v)
            elif how == "append":
                data[name] = [decode_item(x) for x in v]
            elif how == "hourly" and memo is not None:
                data[name] = memo.window(station, name, v)
            elif how == "global" and memo is not None:
                data[name] = memo.window(None, name, v)  # one entry for every station
            elif how in ("hash", "hourly", "global"):
                data[name] = {kk.decode() if isinstance(kk, bytes) else kk: decode_item(x) for kk, x in v.items()}
            else:
                alias, users = name
                stored = int(v[0])
                cursors = [int(c) for c in v[1:len(users) + 1]]
                seconds = [_closed(decode_closed_second(m)) for m in v[len(users) + 1:]]
                if not users:
                    data[alias] = seconds
                for user, cur in zip(users, cursors, strict=True):
                    data[(alias, user)] = [s for s in seconds if s["seq"] > cur] if stored else None
        return data

    # ---- module outputs ----------------------------------------------------------------
    def store_output(self, station: str, module: str, result: Any, ts_ms: int, keep: int | None = None,
                     src: str = "local") -> None:
        """Keep `result` as the newest output of `module` for `station` (list, newest first)."""
        spec = self.catalogue.topic(module) if module in self.catalogue.by_alias else None
        if spec is None or not spec.is_module_output:
            raise StoreError(f"unknown module {module!r}")
        sp = ScriptPipeline(self.r)
        self.writes.queue(sp, station, [(spec.alias, result)], [], ts_ms, keep=keep, src=src)
        sp.execute()

    def read_output(self, station: str, module: str, n: int = 1) -> list[dict[str, Any]]:
        """The newest `n` outputs (Items), newest first."""
        raw: list[bytes] = self.r.lrange(self.keys.output(station, module), 0, max(1, n) - 1)  # type: ignore[assignment]
        return [decode_item(x) for x in raw]  # type: ignore[misc]  # outputs are never empty items

    # ---- registry ----------------------------------------------------------------------
    def stations(self) -> list[str]:
        """Every registered station, least recently seen first (the registry's buckets merged)."""
        pipe = self.r.pipeline(transaction=False)
        for key in self.keys.stations_all():
            pipe.zrange(key, 0, -1, withscores=True)
        pairs = sorted((score, s.decode() if isinstance(s, bytes) else s)
                       for bucket in pipe.execute() for s, score in bucket)
        return [s for _, s in pairs]
