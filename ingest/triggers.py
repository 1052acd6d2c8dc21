"""From window-store triggers to planned runs: which module runs for which station, in which batch.

Pure apart from the two injected look-ups (presence, station registry), which the store
answers in one round trip each. The rules (spec §6.5, §6.6):

- a global trigger (calendar) is new data for every known station;
- readiness and the cascade come from `parsers.readiness` (one place for the rule);
- the batch of a run is `parsers.batches.batch_id` of the message that triggered it,
  directly or through the cascade;
- within one poll, a (station, module) triggered by several messages belongs to the first
  message's batch only; the later triggers are absorbed here, before they reach the queue.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from parsers.batches import PlannedRun, batch_id
from parsers.catalogue import Catalogue
from parsers.readiness import plan_runs as readiness_plan
from parsers.records import Source

#: present(stations, names) -> {station: names present}; one round trip
PresenceFn = Callable[[Sequence[str], Sequence[str]], Mapping[str, Collection[str]]]
#: every known station (the registry); only asked when a global trigger is in the poll
StationsFn = Callable[[], Iterable[str]]


@dataclass
class Plan:
    runs: list[PlannedRun] = field(default_factory=list)
    fired: Counter[str] = field(default_factory=Counter)  # module -> runs planned
    absorbed: Counter[str] = field(default_factory=Counter)  # module -> later triggers in this poll
    not_ready: Counter[str] = field(default_factory=Counter)  # module -> station not ready
    stations: int = 0


def plan_runs(
    triggers: Iterable[Any],
    catalogue: Catalogue,
    present: PresenceFn,
    known_stations: StationsFn,
    *,
    modules: Collection[str] | None = None,
    cache: dict[Any, Any] | None = None,
) -> Plan:
    """Plan the runs caused by `triggers` (store Trigger objects, in poll order).

    `modules` restricts scheduling to a subset of the local modules (the `--modules`
    option); a restricted-out module still counts as present for the cascade once its
    stored output is, but is never planned here. `cache` (any dict the caller keeps across
    calls with the same catalogue) remembers readiness decisions, which depend only on the
    changed alias and the names present.
    """
    per_station = _by_station(triggers, known_stations)
    plan = Plan(stations=len(per_station))
    if not per_station:
        return plan
    allowed = frozenset(catalogue.local_modules()) if modules is None else frozenset(modules)
    aliases = frozenset(a for seq in per_station.values() for a, _ in seq)
    names = _names_of_interest(catalogue, allowed, aliases)
    presence = present(list(per_station), names) if names else {}
    if cache is None:
        cache = {}
    elif len(cache) > _CACHE_MAX:
        cache.clear()
    for s, seq in per_station.items():
        _plan_station(plan, s, seq, frozenset(presence.get(s, ())), catalogue, allowed, cache)
    return plan


#: station -> [(alias, [sources of consecutive triggers of that alias])], in poll order
PerStation = dict[str, list[tuple[str, list[Source]]]]


def _by_station(triggers: Iterable[Any], known_stations: StationsFn) -> PerStation:
    """The triggers per station (a global one for every known station), consecutive
    triggers of one alias grouped."""
    per_station: PerStation = {}
    everyone: list[str] | None = None
    for t in triggers:
        sid = t.station_id
        if sid is None:
            if everyone is None:
                everyone = list(dict.fromkeys(known_stations()))
            targets: Iterable[str] = everyone
        else:
            targets = (sid,)
        for s in targets:
            seq = per_station.get(s)
            if seq is None:
                per_station[s] = [(t.alias, [t.source])]
            elif seq[-1][0] == t.alias:
                seq[-1][1].append(t.source)
            else:
                seq.append((t.alias, [t.source]))
    return per_station


def _plan_station(plan: Plan, s: str, seq: list[tuple[str, list[Source]]], have: frozenset[str],
                  catalogue: Catalogue, allowed: frozenset[str], cache: dict[Any, Any]) -> None:
    """Plan one station's runs into `plan`; `have`: the names present in the store."""
    planned: set[str] = set()
    known = have  # present or planned earlier in this poll: what readiness sees
    for alias, sources in seq:
        i, left = 0, len(sources)
        while left:
            key = (alias, known)
            decided = cache.get(key)
            if decided is None:
                decided = cache[key] = _decide(catalogue, alias, known, allowed)
            ready, not_ready_here = decided
            # a trigger that plans nothing new leaves `known` as it is, so every further
            # trigger of the same alias decides alike: count them all at once
            plans_new = any(m not in planned for m in ready)
            n = 1 if plans_new else left
            for m in not_ready_here:
                plan.not_ready[m] += n
            for m in ready:
                if m in planned:
                    plan.absorbed[m] += n
                else:
                    planned.add(m)
                    plan.fired[m] += 1
                    plan.runs.append(PlannedRun(s, m, batch_id(m, sources[i])))
            if plans_new:
                known = have | planned
            i += n
            left -= n


#: readiness decisions kept per (alias, names present); cleared beyond this many
_CACHE_MAX = 4096


def _decide(catalogue: Catalogue, alias: str, known: frozenset[str],
            allowed: frozenset[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(modules ready to run, modules not ready) for one changed alias, `allowed` only."""
    d = readiness_plan(catalogue, (alias,), known)
    return tuple(m for m in d.runs if m in allowed), tuple(m for m in d.not_ready if m in allowed)


def _names_of_interest(catalogue: Catalogue, modules: Collection[str],
                       aliases: Collection[str] = ()) -> list[str]:
    """The names whose presence can decide readiness in this poll: inputs and deps of the
    allowed `modules` that some module reachable from the changed `aliases` requires (an
    optional name, or one only unreachable modules need, cannot change any decision).
    Without `aliases`: every input and dep of `modules`."""
    needed: set[str] | None = None
    if aliases:
        reached: set[str] = set()
        frontier = set(aliases)
        for m in catalogue.order:  # dependencies first, so one pass follows the cascade
            spec = catalogue.by_module[m]
            if spec.runs == "local" and not spec.trigger_set.isdisjoint(frontier):
                reached.add(m)
                frontier.add(m)
        needed = {n for m in reached for n in catalogue.by_module[m].required}
    out: dict[str, None] = {}
    for m in catalogue.order:
        if m in modules:
            for n in catalogue.by_module[m].all_inputs:
                if needed is None or n in needed:
                    out[n] = None
    return list(out)
