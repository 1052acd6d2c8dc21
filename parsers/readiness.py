"""Which local modules run for a station after new data (spec §6.5 readiness, triggers, cascade).

Pure: the ingester passes the names (topic aliases or module names) whose windows just
changed for the station and the names the store holds for it; the worker asks again at run
start with `missing_required`. A dependency scheduled earlier in the same cascade counts as
present, because it will have run (successfully or not) before its dependent starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from parsers.catalogue import Catalogue, ModuleSpec


@dataclass(frozen=True, slots=True)
class Plan:
    """`runs`: modules to run, in dependency (level) order. `not_ready`: modules that were
    triggered (directly or by the cascade) but lack a required input, for the counters."""

    runs: tuple[str, ...]
    not_ready: tuple[str, ...]


def missing_required(spec: ModuleSpec, present: Iterable[str]) -> tuple[str, ...]:
    """Required inputs and deps of `spec` that are not in `present`, in input order."""
    have = set(present)
    return tuple(n for n in spec.required if n not in have)


def plan_runs(catalogue: Catalogue, changed: Iterable[str], present: Iterable[str]) -> Plan:
    """Local modules to run for one station, given what changed and what is stored.

    A module is triggered when a changed name is among its triggers, or (cascade) when a
    local module scheduled earlier in this plan is among its triggers. It runs when every
    required input is present or scheduled earlier. customer_mining and any module without
    triggers is never triggered by data.
    """
    changed_set = set(changed)
    have = set(present)
    scheduled: list[str] = []
    not_ready: list[str] = []
    for name in catalogue.order:  # dependencies first, so upstreams are decided before dependents
        spec = catalogue.by_module[name]
        if spec.runs != "local":
            continue
        triggers = spec.trigger_set
        direct = not triggers.isdisjoint(changed_set)
        cascade = any(u in triggers for u in scheduled)
        if not (direct or cascade):
            continue
        if missing_required(spec, have.union(scheduled)):
            not_ready.append(name)
        else:
            scheduled.append(name)
    return Plan(tuple(scheduled), tuple(not_ready))
