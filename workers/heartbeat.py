"""Heartbeat runs (spec §6.5): modules with `heartbeat_s` run once per period for every ready
known station, even without new data. customer_mining has no inputs, so this is how it runs.

Every worker's sweeper calls `tick` about once a second; any number may do so at once. One
`SET NX` per (module, tick) elects the process that schedules that tick, and the batch id
(`parsers.batches.heartbeat_batch_id`) is deterministic, so a tick is scheduled once
and coalescing still applies (a station whose previous heartbeat run is pending absorbs it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from parsers.batches import PlannedRun, heartbeat_batch_id
from parsers.catalogue import Catalogue, ModuleSpec
from parsers.readiness import missing_required
from store.counters import Counters
from store.keys import Keys
from store.windows import WindowStore
from workers.scheduling import ScheduleOptions, schedule

log = logging.getLogger(__name__)


@dataclass
class HeartbeatResult:
    ticks: list[str] = field(default_factory=list)  # batch ids this call scheduled
    runs: int = 0
    not_ready: int = 0


def heartbeat_modules(catalogue: Catalogue) -> list[ModuleSpec]:
    return [m for m in catalogue.modules if m.runs == "local" and m.heartbeat_s]


def tick(r: redis.Redis, catalogue: Catalogue, now_s: float, options: ScheduleOptions | None = None, *,
         store: WindowStore | None = None, modules: Sequence[ModuleSpec] | None = None) -> HeartbeatResult:
    """Schedule the current tick of every heartbeat module unless another process already did."""
    out = HeartbeatResult()
    options = options or ScheduleOptions()
    prefix = options.prefix
    mods = list(modules) if modules is not None else heartbeat_modules(catalogue)
    if not mods:
        return out
    keys = Keys(prefix)
    won = []
    pipe = r.pipeline(transaction=False)
    ticks = {}
    for m in mods:
        every = m.heartbeat_s
        if not every:
            raise ValueError(f"module {m.name} has no heartbeat_s")
        t = int(now_s // every * every)
        ticks[m.name] = t
        pipe.set(keys.heartbeat_tick(m.name, t), "1", nx=True, ex=max(60, int(2 * every)))
    for m, ok in zip(mods, pipe.execute(), strict=True):
        if ok:
            won.append(m)
    if not won:
        return out
    store = store or WindowStore(r, catalogue, prefix)
    stations = store.stations()
    runs: list[PlannedRun] = []
    for m in won:
        batch = heartbeat_batch_id(m.name, ticks[m.name])
        present = store.present(stations, m.all_inputs) if m.all_inputs else {s: set() for s in stations}
        ready = [s for s in stations if not missing_required(m, present.get(s, set()))]
        out.not_ready += len(stations) - len(ready)
        runs += [PlannedRun(s, m.name, batch) for s in ready]
        out.ticks.append(batch)
    if runs:
        schedule(r, catalogue, runs, options)
    out.runs = len(runs)
    c = Counters(r, prefix)
    pipe = r.pipeline(transaction=False)
    c.incr(pipe, "heartbeat", "ticks", len(out.ticks))
    c.incr(pipe, "heartbeat", "runs", out.runs)
    c.incr(pipe, "heartbeat", "not_ready", out.not_ready)
    pipe.execute()
    log.debug("heartbeat %s: %d runs, %d not ready", out.ticks, out.runs, out.not_ready)
    return out


def hold(r: redis.Redis, catalogue: Catalogue, prefix: str, now_s: float, span_s: float) -> int:
    """Claim every heartbeat tick from `now_s` for `span_s` seconds (the same `SET NX` the
    sweepers race for), so no process schedules them: a pipeline about to stop gets no new
    heartbeat batch while its workers shut down (a batch created then would stay open).
    Returns how many ticks this call claimed (those no process had scheduled yet)."""
    keys = Keys(prefix)
    pipe = r.pipeline(transaction=False)
    for m in heartbeat_modules(catalogue):
        every = m.heartbeat_s or 0.0
        if every <= 0:
            continue
        for k in range(int(now_s // every), int((now_s + span_s) // every) + 1):
            pipe.set(keys.heartbeat_tick(m.name, int(k * every)), "held", nx=True, ex=int(span_s + 2 * every + 60))
    return sum(1 for ok in pipe.execute() if ok)
