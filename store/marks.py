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
windows and the offset high-water marks beside it. It only grows, and never outlives the
meta hash (a station whose windows expired gets no mark).

What is atomic. A station's mark moves inside the script that reserves the station's runs
(`store.pending`, the scheduler's first round trip): that script reads the mark, *gates*
every run by the offset of the message its batch id names (a run whose message is at or below
the mark is not scheduled again) and advances the mark, all on keys tagged `{S}`, declared in
KEYS, so it is one atomic step on one Redis and on Redis Cluster alike. Reserving a run and
recording its message as scheduled cannot be separated by a crash. A global message's runs
span every station's slot: each station's share is gated and recorded the same way, in the
station's own meta hash (field `sm:<global topic>:<partition>`), and the alias's mark, which
lets a replay skip the whole fan-out before planning, moves in the alias's slot once every
station's share was scheduled.

What is not atomic, and why that is safe. The batch records (`sf:batch:<id>`, their own
slots) are created in the scheduler's next round trip and the job is enqueued in the one
after: on Redis Cluster no script can span those slots. A crash in between leaves the mark
advanced and the message's runs still in the station's pending (or rate) hash, reserved or
committed, their batch or job possibly missing. The redelivery finds them: `filter` hands
back every run still held for a message at or below the mark (*resumed*), the reservation
script recognises it (same batch id: a replay, not a new run) and the scheduler carries on:
the batch id is the message's own (`parsers.batches.batch_id`) and created if absent, so the
redelivery creates the missing batch once or finds it, commits the reserved run and enqueues
the job unless one waits. A run no longer held was taken by a job, which needs its batch to
have existed: nothing is left to do. So each message gets exactly one batch, run and upload
per (module, station) whatever the crash point.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from parsers.batches import HEARTBEAT_TOPIC, PlannedRun, parse_batch_id
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


@dataclass
class MarkPlan:
    """The marks one scheduling call records (see the module docstring).

    `stations`: station -> {field: offset} of its fresh triggers, advanced by the station's
    reservation script even when they planned no run; `aliases`: global alias meta key ->
    {field: offset}, advanced once every station's share is scheduled; `gate`: the runs are
    gated by the message of their batch id (False for order seconds closed by the clock: a
    timer close is never a replay, although a later order message may have moved the mark).
    """

    suffix: str = ""
    stations: dict[str, dict[str, int]] = field(default_factory=dict)
    aliases: dict[str, dict[str, int]] = field(default_factory=dict)
    gate: bool = True

    def __bool__(self) -> bool:
        return bool(self.stations or self.aliases)

    def run_mark(self, batch: str) -> tuple[str, int] | None:
        """(field, offset) of the message a run's batch belongs to, in its station's meta
        hash; None when the run is not gated (heartbeat batches, no gate)."""
        if not self.gate:
            return None
        ref = parse_batch_id(batch)
        if ref.topic == HEARTBEAT_TOPIC:
            return None
        return f"sm:{ref.topic}:{ref.partition}{self.suffix}", ref.offset

    def station_advance(self, station: str, batches: Iterable[str]) -> dict[str, int]:
        """The marks the station's reservation script moves: its fresh triggers' and the
        gated runs' own (a global message's share), the highest offset per field."""
        out = dict(self.stations.get(station, ()))
        for b in batches:
            m = self.run_mark(b)
            if m is not None and m[1] > out.get(m[0], -1):
                out[m[0]] = m[1]
        return out


def advance_marks(r: redis.Redis, marks: Mapping[str, Mapping[str, int]]) -> None:
    """Move marks forward: meta key -> {field: offset}, one script per key (its own slot),
    one round trip; a mark already further stays."""
    if not marks:
        return
    sp = ScriptPipeline(r)
    for key, fields in marks.items():
        args: list[Any] = []
        for fld, off in fields.items():
            args += [fld, int(off)]
        if args:
            sp.call(_ADVANCE, [key], args)
    sp.execute()


@dataclass
class Filtered:
    """`ScheduleMarks.filter`'s answer."""

    fresh: list[Any]  # triggers not scheduled yet: to plan
    resumed: list[PlannedRun]  # runs of replayed messages still held: their scheduling carries on
    marks: MarkPlan  # what scheduling the fresh triggers records
    replayed: int  # triggers dropped: scheduled by an earlier delivery


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else v


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

    def filter(self, triggers: Sequence[Any], gate: bool = True) -> Filtered:
        """Split `triggers` into fresh ones and replays; one round trip, a second only when a
        station trigger is a replay (its station's held runs are read), none without
        triggers. `gate` False: order seconds closed by the clock (never replays, the marks
        only move; no held runs are looked for)."""
        plan = MarkPlan(self.suffix, gate=gate)
        if not triggers:
            return Filtered([], [], plan, 0)
        slots = [self._slot(t) for t in triggers]
        current = self._read(slots)
        fresh: list[Any] = []
        replays: dict[str, set[tuple[str, int, int]]] = {}
        for t, (key, fld) in zip(triggers, slots, strict=True):
            off = t.source.offset
            if off <= current.get((key, fld), -1):
                if t.station_id is not None:
                    replays.setdefault(t.station_id, set()).add((t.source.topic, t.source.partition, off))
                continue
            fresh.append(t)
            adv = plan.stations.setdefault(t.station_id, {}) if t.station_id is not None \
                else plan.aliases.setdefault(key, {})
            if off > adv.get(fld, -1):
                adv[fld] = off
        return Filtered(fresh, self._held(replays) if gate else [], plan, len(triggers) - len(fresh))

    def _read(self, slots: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        wanted: dict[str, list[str]] = {}
        for key, fld in dict.fromkeys(slots):
            wanted.setdefault(key, []).append(fld)
        pipe = self.r.pipeline(transaction=False)
        for key, fields in wanted.items():
            pipe.hmget(key, fields)
        current: dict[tuple[str, str], int] = {}
        for (key, fields), values in zip(wanted.items(), pipe.execute(), strict=True):
            for fld, v in zip(fields, values, strict=True):
                if v is not None:
                    current[(key, fld)] = int(v)
        return current

    def _held(self, replays: Mapping[str, set[tuple[str, int, int]]]) -> list[PlannedRun]:
        """The runs the stations' pending and rate hashes still hold for the replayed
        messages (reserved, committed or deferred: the crash came before their job took them)."""
        if not replays:
            return []
        pipe = self.r.pipeline(transaction=False)
        for s in replays:
            pipe.hgetall(self.keys.pending(s))
            pipe.hgetall(self.keys.rate(s))
        replies = pipe.execute()
        out: list[PlannedRun] = []
        for i, (s, sources) in enumerate(replays.items()):
            for h in (replies[2 * i], replies[2 * i + 1]):
                for k, v in h.items():
                    module = _text(k)
                    if module.startswith("_"):
                        continue
                    for b in _text(v).lstrip("?").split():
                        ref = parse_batch_id(b)
                        if (ref.topic, ref.partition, ref.offset) in sources:
                            out.append(PlannedRun(s, module, b))
        return out

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
