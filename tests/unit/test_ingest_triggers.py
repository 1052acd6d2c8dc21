"""Trigger planning: fan-out to stations, global expansion, absorption, readiness, cascade."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from ingest.triggers import plan_runs
from parsers.batches import PlannedRun, batch_id
from parsers.catalogue import default_catalogue
from parsers.records import Source
from store.windows import Trigger

CAT = default_catalogue()
RT = "SCHEDULE-STATION-REALTIME-DATA"
ALL_NAMES = {t.alias for t in CAT.topics}


class Presence:
    """Stand-in for WindowStore.present: records every call (one per plan)."""

    def __init__(self, per_station: Mapping[str, Collection[str]] | None = None,
                 default: Collection[str] = ALL_NAMES) -> None:
        self.per_station = per_station or {}
        self.default = default
        self.calls: list[tuple[list[str], list[str]]] = []

    def __call__(self, stations: Sequence[str], names: Sequence[str]) -> dict[str, set[str]]:
        self.calls.append((list(stations), list(names)))
        return {s: set(self.per_station.get(s, self.default)) & set(names) for s in stations}


def src(topic: str, offset: int, partition: int = 0) -> Source:
    return Source(topic, partition, offset, 1_700_000_000_000)


def no_registry() -> list[str]:
    raise AssertionError("the registry must only be read for global triggers")


def test_one_message_with_three_stations_plans_each_station_once_per_module() -> None:
    s = src(RT, 41)
    trig = [Trigger(st, "station_realtime_data", s) for st in ("A", "B", "C")]
    pres = Presence()
    plan = plan_runs(trig, CAT, pres, no_registry)
    stations = sorted({r.station for r in plan.runs})
    assert stations == ["A", "B", "C"]
    per_station = {st: [r.module for r in plan.runs if r.station == st] for st in stations}
    # realtime triggers load_prediction, evaluation_model, SOH_model, electricity_price, thermal_management
    # directly; station_guidance (via load_prediction/evaluation_model) and thermal_management via cascade
    expected = ["load_prediction", "evaluation_model", "SOH_model", "electricity_price",
                "station_guidance", "thermal_management"]
    assert per_station["A"] == expected
    assert all(r.batch_id == f"{r.module}:{RT}:0:41" for r in plan.runs)
    assert len(pres.calls) == 1  # one presence round trip for the whole poll
    assert plan.fired["load_prediction"] == 3 and not plan.absorbed


def test_many_updates_of_one_station_go_to_the_first_message_batch() -> None:
    trig = [Trigger("S", "device_host_acdc", src("SCHEDULE-DEVICE-HOST-ACDC", o)) for o in range(10, 60)]
    plan = plan_runs(trig, CAT, Presence(), no_registry)
    assert plan.runs == [
        PlannedRun("S", "evaluation_model", "evaluation_model:SCHEDULE-DEVICE-HOST-ACDC:0:10"),
        PlannedRun("S", "electricity_price", "electricity_price:SCHEDULE-DEVICE-HOST-ACDC:0:10"),
        PlannedRun("S", "station_guidance", "station_guidance:SCHEDULE-DEVICE-HOST-ACDC:0:10"),
        PlannedRun("S", "thermal_management", "thermal_management:SCHEDULE-DEVICE-HOST-ACDC:0:10"),
    ]
    assert plan.absorbed == {"evaluation_model": 49, "electricity_price": 49,
                             "station_guidance": 49, "thermal_management": 49}


def test_global_trigger_reaches_every_known_station() -> None:
    t = Trigger(None, "environment_calendar", src("SCHEDULE-ENVIRONMENT-CALENDAR", 3))
    asked = []

    def registry() -> list[str]:
        asked.append(1)
        return ["X", "Y", "Z"]

    plan = plan_runs([t, t], CAT, Presence(), registry)  # two global triggers: one registry read
    assert asked == [1]
    assert sorted({r.station for r in plan.runs}) == ["X", "Y", "Z"]
    lp = [r for r in plan.runs if r.module == "load_prediction"]
    assert [r.batch_id for r in lp] == ["load_prediction:SCHEDULE-ENVIRONMENT-CALENDAR:0:3"] * 3


def test_not_ready_station_is_counted_and_not_planned() -> None:
    # station N has realtime data but no station_param: load_prediction / SOH_model not ready
    pres = Presence({"N": ALL_NAMES - {"station_param"}})
    plan = plan_runs([Trigger("N", "station_realtime_data", src(RT, 5))], CAT, pres, no_registry)
    modules = [r.module for r in plan.runs]
    assert "load_prediction" not in modules and "SOH_model" not in modules
    assert plan.not_ready["load_prediction"] == 1 and plan.not_ready["SOH_model"] == 1
    assert "evaluation_model" in modules  # needs no station_param


def test_module_filter_restricts_what_is_planned() -> None:
    plan = plan_runs([Trigger("S", "station_realtime_data", src(RT, 9))], CAT, Presence(), no_registry,
                     modules={"load_prediction"})
    assert plan.runs == [PlannedRun("S", "load_prediction", f"load_prediction:{RT}:0:9")]


def test_external_module_output_triggers_its_dependents() -> None:
    from parsers.catalogue import Catalogue

    cat = Catalogue.build(module_overrides={"load_prediction": {"runs": "external"}})
    t = Trigger("S", "load_prediction", src("MODULE-OUTPUT-LOAD_PREDICTION", 2))
    plan = plan_runs([t], cat, Presence(default=ALL_NAMES | {"load_prediction", "evaluation_model",
                                                             "operation_optimization"}), no_registry)
    assert [r.module for r in plan.runs] == ["station_guidance", "thermal_management"]


def test_no_triggers_no_round_trip() -> None:
    pres = Presence()
    assert plan_runs([], CAT, pres, no_registry).runs == []
    assert pres.calls == []


def test_batch_id_format() -> None:
    assert batch_id("SOH_model", Source("T", 3, 1184467, 0)) == "SOH_model:T:3:1184467"
