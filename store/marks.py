"""Replay marks: how far triggers have been scheduled, per (station or global alias, topic, partition).

Why: the window store's offset high-water marks make a replayed message a no-op for the
windows, but its triggers are recomputed from its content (spec §6.8) and would be planned
against today's readiness. A new consumer group re-reads the slow topics (§6.9), an offset
reset or a restart re-delivers: without a mark those triggers would create batches and runs
again, long after the batches of the first delivery expired. A trigger whose source offset is
at or below the mark of its (station, topic, partition) was scheduled already and is dropped
before planning: no batch, no run, no upload.

The mark lives in the meta hash of the station (`sf:{S}:meta`) or of the global alias
(`sf:g:{alias}:meta`), field `sm:<topic>:<partition>`, so it is kept exactly as long as the
windows and the offset high-water marks beside it. It is advanced (never moved back, one
script per key: Redis-Cluster safe) only after the triggers' runs were scheduled, i.e. their
batches created and jobs enqueued: a crash between the window write and the advance leaves
the mark behind, and the redelivery schedules again, which create-if-absent batches and the
job's replay check turn into exactly one batch, run and upload per message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis

from store.keys import Keys
from store.scripts import LuaScript, ScriptPipeline

_ADVANCE = LuaScript("advance_marks", """
-- KEYS[1] meta hash; ARGV: field, offset pairs. Each field only ever grows. The hash must
-- exist (the window write created it, with its TTL): a mark never outlives its windows.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if not cur or tonumber(cur) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
""")

#: (meta key, field) -> offset
Marks = dict[tuple[str, str], int]


class ScheduleMarks:
    """`modules`: the modules the ingester schedules when it is restricted (`--modules`); its
    marks are then its own (field suffix `@<modules>`), so an ingester scheduling other
    modules from the same topics in another group still schedules them."""

    def __init__(self, r: redis.Redis, prefix: str = "sf", modules: Iterable[str] | None = None) -> None:
        self.r = r
        self.keys = Keys(prefix)
        self.suffix = "" if not modules else "@" + ",".join(sorted(modules))

    def _slot(self, trigger: Any) -> tuple[str, str]:
        src = trigger.source
        key = self.keys.meta(trigger.station_id) if trigger.station_id is not None \
            else self.keys.global_meta(trigger.alias)
        return key, f"sm:{src.topic}:{src.partition}{self.suffix}"

    def filter(self, triggers: Sequence[Any]) -> tuple[list[Any], Marks, int]:
        """(triggers not scheduled yet, the marks to advance once they are, number dropped as
        replays). One round trip, none without triggers."""
        if not triggers:
            return [], {}, 0
        slots = [self._slot(t) for t in triggers]
        wanted: dict[str, list[str]] = {}
        for key, fld in dict.fromkeys(slots):
            wanted.setdefault(key, []).append(fld)
        pipe = self.r.pipeline(transaction=False)
        for key, fields in wanted.items():
            pipe.hmget(key, fields)
        current: Marks = {}
        for (key, fields), values in zip(wanted.items(), pipe.execute(), strict=True):
            for fld, v in zip(fields, values, strict=True):
                if v is not None:
                    current[(key, fld)] = int(v)
        fresh: list[Any] = []
        advance: Marks = {}
        for t, slot in zip(triggers, slots, strict=True):
            off = t.source.offset
            if off <= current.get(slot, -1):
                continue
            fresh.append(t)
            if off > advance.get(slot, -1):
                advance[slot] = off
        return fresh, advance, len(triggers) - len(fresh)

    def advance(self, marks: Mapping[tuple[str, str], int]) -> None:
        """Move the marks forward (one round trip; a mark already further stays)."""
        if not marks:
            return
        per_key: dict[str, list[Any]] = {}
        for (key, fld), off in marks.items():
            per_key.setdefault(key, []).extend((fld, int(off)))
        sp = ScriptPipeline(self.r)
        for key, args in per_key.items():
            sp.call(_ADVANCE, [key], args)
        sp.execute()

    def read(self, station: str | None, alias: str | None = None) -> dict[str, int]:
        """The marks of a station (or of a global alias): "<topic>:<partition>" -> offset."""
        key = self.keys.meta(station) if station is not None else self.keys.global_meta(alias or "")
        raw: Iterable[tuple[Any, Any]] = self.r.hgetall(key).items()
        out = {}
        for k, v in raw:
            k = k.decode() if isinstance(k, bytes) else k
            if k.startswith("sm:") and k.endswith(self.suffix) and (self.suffix or "@" not in k):
                out[k[3:len(k) - len(self.suffix)]] = int(v)
        return out
