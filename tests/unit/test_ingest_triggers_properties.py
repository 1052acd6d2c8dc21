"""The trigger planner against its plain statement: every trigger, in poll order, asks
readiness with what is present plus what this poll already planned for the station, then
plans, absorbs or counts not-ready. Grouping repeats, caching decisions and asking presence
only for the names that can decide must not change a single run or count."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.triggers import Plan, plan_runs
from parsers.batches import PlannedRun, batch_id
from parsers.catalogue import default_catalogue
from parsers.readiness import plan_runs as readiness_plan
from parsers.records import Source
from store.windows import Trigger

pytestmark = pytest.mark.unit

CAT = default_catalogue()
LOCAL = list(CAT.local_modules())
NAMES = sorted({n for m in LOCAL for n in CAT.by_module[m].all_inputs})
ALIASES = ["station_realtime_data", "car_order", "device_host_dcdc", "device_host_acdc", "device_storage",
           "device_pv", "environment_weather", "station_param", "car_price", "device_error", "device_meter",
           "environment_calendar", "pv_prediction", "evaluation_model", "load_prediction"]
STATIONS = ["A", "B", "C"]


def reference(triggers, present_all, modules) -> Plan:
    allowed = set(LOCAL) if modules is None else set(modules)
    # presence is asked for the inputs and deps of the allowed modules only: a restricted-out
    # module counts as present through its stored output, never as "will run"
    visible = {n for m in allowed for n in CAT.by_module[m].all_inputs}
    plan = Plan()
    per: dict[str, list] = {}
    for t in triggers:
        for s in (STATIONS if t.station_id is None else [t.station_id]):
            per.setdefault(s, []).append((t.alias, t.source))
    plan.stations = len(per)
    for s, trig in per.items():
        planned: set[str] = set()
        for alias, source in trig:
            d = readiness_plan(CAT, (alias,), (set(present_all.get(s, ())) & visible) | planned)
            for m in d.not_ready:
                if m in allowed:
                    plan.not_ready[m] += 1
            for m in d.runs:
                if m not in allowed:
                    continue
                if m in planned:
                    plan.absorbed[m] += 1
                else:
                    planned.add(m)
                    plan.fired[m] += 1
                    plan.runs.append(PlannedRun(s, m, batch_id(m, source)))
    return plan


trigger = st.tuples(st.sampled_from(STATIONS + [None]), st.sampled_from(ALIASES), st.integers(0, 3))


@settings(max_examples=300, deadline=None)
@given(trigs=st.lists(trigger, max_size=25),
       present=st.fixed_dictionaries({s: st.sets(st.sampled_from(NAMES)) for s in STATIONS}),
       modules=st.none() | st.sets(st.sampled_from(LOCAL), min_size=1))
def test_plan_equals_the_per_trigger_statement(trigs, present, modules) -> None:
    triggers = []
    for off, (sid, alias, part) in enumerate(trigs):
        alias = "environment_calendar" if sid is None else alias
        triggers.append(Trigger(sid, alias, Source(f"T-{alias}", part, off, 1)))
    asked: list[list[str]] = []

    def pres(stations, names):
        asked.append(list(names))
        return {s: set(present.get(s, ())) & set(names) for s in stations}

    cache: dict = {}
    got = plan_runs(triggers, CAT, pres, lambda: STATIONS, modules=modules, cache=cache)
    again = plan_runs(triggers, CAT, pres, lambda: STATIONS, modules=modules, cache=cache)  # warm cache
    want = reference(triggers, present, modules)
    for p in (got, again):
        assert p.runs == want.runs
        assert Counter(p.fired) == Counter(want.fired)
        assert Counter(p.absorbed) == Counter(want.absorbed)
        assert Counter(p.not_ready) == Counter(want.not_ready)
        assert p.stations == want.stations
    assert len(asked) <= 2
