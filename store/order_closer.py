"""Closing order seconds by the clock: the due index and the closer that walks it.

`WindowStore.apply` adds `<station>|<second>` to the alias's due index (`<prefix>:due:<alias>`,
scored by the second's close deadline; on Redis Cluster split into buckets by station, see
store.keys) for every order record. Most seconds are then closed by
a later order of the same station inside apply.lua, which cannot touch the global index (its
calls stay in one station's slot), so the store reports those closes here (`forget`) and the
members are removed with the store's next round trip. The index therefore holds about one
member per station with an open second; a member left behind by a crash is removed by the scan.

`close_due` walks every member whose deadline passed, `limit` per round trip, so one call
leaves no due second open: an idle exit that closes until nothing is returned closes them
all, however many members of already-closed seconds the index holds. Safe with many
concurrent callers: close_orders.lua closes a second at most once; losers see nothing open.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from parsers.catalogue import Catalogue, TopicSpec
from parsers.records import Source
from store.codec import source_from
from store.counters import Tally
from store.keys import Keys
from store.scripts import LuaScript

#: (script, per-call arguments, first reply index) -> the calls' replies, NOSCRIPT re-sent
Finish = Callable[[list[Any], list[list[Any]], int], list[Any]]


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class OrderCloser:
    def __init__(self, r: Any, catalogue: Catalogue, keys: Keys, script: LuaScript, tally: Tally,
                 order_modules: dict[str, str], finish: Finish,
                 flush_into: Callable[[Any], dict[tuple[str, str], int]],
                 trigger: Callable[[str, str, Source], Any]) -> None:
        self.r = r
        self.keys = keys
        self.script = script
        self.tally = tally
        self.order_modules = order_modules
        self.specs = [t for t in catalogue.topics if t.kind == "orders"]
        self._finish = finish
        self._flush_into = flush_into
        self.trigger = trigger  # store.windows.Trigger (defined there, next to apply's triggers)
        self._closed: dict[str, set[str]] = {}  # alias -> due members of seconds already closed

    # ---- members of seconds closed by a later order ---------------------------------------
    def forget(self, alias: str, station: str, second: str) -> None:
        """`station`'s `second` of `alias` is closed: its due member goes with the next round trip."""
        self._closed.setdefault(alias, set()).add(f"{station}|{second}")

    def take_forgotten(self) -> dict[str, set[str]]:
        out, self._closed = self._closed, {}
        return out

    def restore(self, taken: dict[str, set[str]]) -> None:
        """Give back members whose removal may not have run (it is repeated: ZREM is idempotent)."""
        for alias, members in taken.items():
            self._closed.setdefault(alias, set()).update(members)

    def removals(self, taken: dict[str, set[str]]) -> Iterable[tuple[Any, ...]]:
        for alias, members in taken.items():
            by_key: dict[str, list[str]] = {}
            for m in members:
                by_key.setdefault(self.keys.orders_due_of(alias, m.rpartition("|")[0]), []).append(m)
            for key, ms in by_key.items():
                yield ("ZREM", key, *ms)

    # ---- the scan -------------------------------------------------------------------------
    def count_due(self, until_ms: int) -> int:
        """Members (open seconds, or closed ones not yet removed) due at or before `until_ms`."""
        pipe = self.r.pipeline(transaction=False)
        for spec in self.specs:
            for key in self.keys.orders_due_all(spec.alias):
                pipe.zcount(key, "-inf", int(until_ms))
        return sum(int(n) for n in pipe.execute()) if self.specs else 0

    def close_due(self, now_ms: int, limit: int = 1000) -> list[Any]:
        """Close every open second whose deadline is at or before `now_ms`; the triggers
        (store.windows.Trigger) of the seconds this call closed."""
        triggers: list[Any] = []
        limit = max(1, int(limit))
        for spec in self.specs:
            gone = self._closed.pop(spec.alias, set())
            keys = self.keys.orders_due_all(spec.alias)
            pipe = self.r.pipeline(transaction=False)
            for c in self.removals({spec.alias: gone}):
                pipe.execute_command(*c)
            for key in keys:  # the first page of every bucket in the same round trip
                pipe.zrangebyscore(key, "-inf", int(now_ms), start=0, num=limit)
            try:
                pages = pipe.execute()[-len(keys):]
            except Exception:
                self.restore({spec.alias: gone})
                raise
            for due_key, members in zip(keys, pages, strict=True):
                skip = 0  # members kept (not yet due by their station's state) stay in the index
                while members:
                    skip += self._close_page(spec, due_key, members, int(now_ms), triggers)
                    if len(members) < limit:
                        break
                    members = self.r.zrangebyscore(due_key, "-inf", int(now_ms), start=skip, num=limit)
        return triggers

    def _close_page(self, spec: TopicSpec, due_key: str, members: list[Any], now_ms: int,
                    triggers: list[Any]) -> int:
        """One round trip of close_orders.lua calls and one of index removals and counters;
        returns how many members stay (their second's deadline has not passed after all)."""
        pipe = self.r.pipeline(transaction=False)
        args = []
        for m in members:
            sid, _, sec = _text(m).rpartition("|")
            # numkeys first: the finish step re-runs exactly these arguments after a NOSCRIPT
            a = [3, self.keys.orders_state(sid, spec.alias), self.keys.orders_closed(sid, spec.alias),
                 self.keys.orders_closers(sid, spec.alias), now_ms,
                 sec, spec.window_size, self.order_modules.get(spec.alias, ""),
                 "" if spec.retention_s is None else str(int(spec.retention_s * 1000))]
            args.append(a)
            pipe.evalsha(self.script.sha, *a)
        replies = self._finish(pipe.execute(raise_on_error=False), args, 0)
        done = []
        for m, reply in zip(members, replies, strict=True):
            if int(reply[0]) == 0:
                continue
            done.append(m)
            if len(reply) > 1:
                source = source_from(_text(reply[4]), int(reply[5]))
                triggers.append(self.trigger(_text(m).rpartition("|")[0], spec.alias, source))
                self.tally.add(f"topic:{source.topic}", "seconds_closed_by_timer")
                self.tally.add(f"topic:{source.topic}", "seconds_evicted", int(reply[6]))
        p2 = self.r.pipeline(transaction=False)
        if done:
            p2.zrem(due_key, *done)
        counts = self._flush_into(p2)
        if done or counts:
            try:
                p2.execute()
            except Exception:
                self.tally.restore(counts)
                raise
        return len(members) - len(done)
