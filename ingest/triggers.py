"""From window-store triggers to planned runs: which module runs for which station, in which batch.

Pure apart from the two injected look-ups (presence, station registry), which the store
answers in one round trip each. The rules (spec §6.5, §6.6):

- a global trigger (calendar) is new data for every known station;
- readiness and the cascade come from `parsers.readiness` (one place for the rule);
- the batch of a run is `<module>:<topic>:<partition>:<offset>` of the message that
  triggered it, directly or through the cascade;
- within one poll, a (station, module) triggered by several messages belongs to the first
  message's batch only; the later triggers are absorbed here, before they reach the queue.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from parsers.catalogue import Catalogue
from parsers.readiness import plan_runs as readiness_plan
from parsers.records import Source

#: present(stations, names) -> {station: names present}; one round trip
PresenceFn = Callable[[Sequence[str], Sequence[str]], Mapping[str, Collection[str]]]
#: every known station (the registry); only asked when a global trigger is in the poll
StationsFn = Callable[[], Iterable[str]]


class PlannedRun(NamedTuple):
    station: str
    module: str
    batch_id: str


def batch_id(module: str, source: Source) -> str:
    return f"{module}:{source.topic}:{source.partition}:{source.offset}"


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
) -> Plan:
    """Plan the runs caused by `triggers` (store Trigger objects, in poll order).

    `modules` restricts scheduling to a subset of the local modules (the `--modules`
    option); a restricted-out module still counts as present for the cascade once its
    stored output is, but is never planned here.
    """
    per_station: dict[str, list[tuple[str, Source]]] = {}
    everyone: list[str] | None = None
    for t in triggers:
        if t.station_id is None:
            if everyone is None:
                everyone = list(dict.fromkeys(known_stations()))
            for s in everyone:
                per_station.setdefault(s, []).append((t.alias, t.source))
        else:
            per_station.setdefault(t.station_id, []).append((t.alias, t.source))

    plan = Plan(stations=len(per_station))
    if not per_station:
        return plan
    allowed = set(catalogue.local_modules()) if modules is None else set(modules)
    names = _names_of_interest(catalogue, allowed)
    stations = list(per_station)
    presence = present(stations, names) if names else {}
    for s in stations:
        have = frozenset(presence.get(s, ()))
        planned: set[str] = set()
        decisions: dict[tuple[str, int], Any] = {}  # a station's repeated triggers decide alike
        for alias, source in per_station[s]:
            key = (alias, len(planned))  # `planned` only grows: its size identifies it
            decided = decisions.get(key)
            if decided is None:
                decided = decisions[key] = readiness_plan(catalogue, (alias,), have | planned)
            for m in decided.not_ready:
                if m in allowed:
                    plan.not_ready[m] += 1
            for m in decided.runs:
                if m not in allowed:
                    continue
                if m in planned:
                    plan.absorbed[m] += 1
                    continue
                planned.add(m)
                plan.fired[m] += 1
                plan.runs.append(PlannedRun(s, m, batch_id(m, source)))
    return plan


def _names_of_interest(catalogue: Catalogue, modules: Collection[str]) -> list[str]:
    """Every input alias and dep whose presence decides readiness of `modules`."""
    out: dict[str, None] = {}
    for m in catalogue.order:
        if m in modules:
            for n in catalogue.by_module[m].all_inputs:
                out[n] = None
    return list(out)
