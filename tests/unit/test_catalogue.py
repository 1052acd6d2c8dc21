"""The catalogue against spec §2, §4 and §6.9/§6.10, and its override validation."""

from __future__ import annotations

from dataclasses import replace

import pytest

from parsers.catalogue import Catalogue, CatalogueError, default_catalogue
from stationflow.settings import ConfigError, Settings

pytestmark = pytest.mark.unit

DAY = 86_400

#: spec §2.1: topic -> (kind, cap, ttl seconds or None)
SPEC_INPUTS = {
    "SCHEDULE-STATION-PARAM": ("latest", 1, None),
    "SCHEDULE-STATION-REALTIME-DATA": ("hourly", 168, 2 * 3600),
    "SCHEDULE-ENVIRONMENT-CALENDAR": ("global", 800, 400 * DAY),
    "SCHEDULE-DEVICE-METER": ("latest", 1, 15 * 60),
    "SCHEDULE-DEVICE-GUN": ("latest", 1, 60),
    "SCHEDULE-CAR-ORDER": ("orders", 120, 60),
    "SCHEDULE-CAR-PRICE": ("latest", 1, 40 * DAY),
    "SCHEDULE-DEVICE-ERROR": ("latest", 1, DAY),
    "SCHEDULE-DEVICE-HOST-DCDC": ("devices", 256, 60),
    "SCHEDULE-DEVICE-HOST-ACDC": ("devices", 256, 60),
    "SCHEDULE-DEVICE-STORAGE": ("devices", 256, 60),
    "SCHEDULE-DEVICE-PV": ("latest", 1, 2 * DAY),
    "SCHEDULE-ENVIRONMENT-WEATHER": ("latest", 1, 2 * DAY),
}

#: spec §4.2
SPEC_LEVELS = {
    "load_prediction": 0, "pv_prediction": 0, "evaluation_model": 0, "SOH_model": 0,
    "customer_mining": 0, "operation_optimization": 1, "electricity_price": 1,
    "station_guidance": 1, "thermal_management": 2,
}


@pytest.fixture(scope="module")
def cat() -> Catalogue:
    return default_catalogue()


def test_22_topics_13_inputs_9_outputs(cat: Catalogue) -> None:
    assert len(cat.topics) == 22
    assert {t.topic for t in cat.input_topics} == set(SPEC_INPUTS)
    assert {t.topic for t in cat.output_topics} == {
        "MODULE-OUTPUT-" + m.upper() for m in SPEC_LEVELS
    }
    assert len(cat.by_alias) == 22


def test_input_topics_match_spec_table(cat: Catalogue) -> None:
    for name, (kind, cap, ttl) in SPEC_INPUTS.items():
        t = cat.topic(name)
        assert t.alias == name.removeprefix("SCHEDULE-").lower().replace("-", "_")
        assert (t.kind, t.window_size, t.ttl_s) == (kind, cap, ttl), name


def test_retention_defaults_spec_6_9(cat: Catalogue) -> None:
    assert cat.topic("station_param").retention_s is None
    assert cat.topic("environment_calendar").retention_s == 800 * DAY
    assert cat.topic("car_price").retention_s == 80 * DAY
    for alias in ("device_meter", "car_order", "device_pv", "station_realtime_data", "SOH_model"):
        assert cat.topic(alias).retention_s == 7 * DAY, alias


def test_max_bytes_defaults_spec_6_7(cat: Catalogue) -> None:
    assert cat.topic("device_meter").max_bytes == 1024 * 1024
    assert cat.topic("station_param").max_bytes == 128 * 1024 * 1024
    assert cat.topic("environment_calendar").max_bytes == 128 * 1024 * 1024
    assert cat.topic("MODULE-OUTPUT-SOH_MODEL").max_bytes == 64 * 1024 * 1024


def test_every_module_topic_and_dep_exists(cat: Catalogue) -> None:
    assert len(cat.modules) == 9
    input_aliases = {t.alias for t in cat.input_topics}
    for m in cat.modules:
        assert set(m.inputs) <= input_aliases, m.name
        assert set(m.deps) <= set(cat.by_module), m.name
        assert cat.topic(m.output_topic).module == m.name


def test_dag_is_acyclic_and_ordered(cat: Catalogue) -> None:
    pos = {m: i for i, m in enumerate(cat.order)}
    assert sorted(pos) == sorted(SPEC_LEVELS)
    for m in cat.modules:
        for d in m.deps:
            assert pos[d] < pos[m.name], (d, m.name)


def test_topological_order_spec_examples(cat: Catalogue) -> None:
    pos = {m: i for i, m in enumerate(cat.order)}
    assert pos["pv_prediction"] < pos["operation_optimization"]
    assert pos["pv_prediction"] < pos["electricity_price"]
    assert pos["operation_optimization"] < pos["thermal_management"]
    assert cat.transitive_deps("thermal_management") == (
        "load_prediction", "pv_prediction", "operation_optimization"
    )


def test_levels_match_spec_4_2(cat: Catalogue) -> None:
    assert dict(cat.levels) == SPEC_LEVELS


def test_default_optional_inputs_spec_4_3(cat: Catalogue) -> None:
    em = cat.module("evaluation_model")
    assert set(em.required) == {"station_realtime_data", "car_price", "device_host_dcdc", "device_host_acdc"}
    ep = cat.module("electricity_price")
    assert "pv_prediction" not in ep.required and "evaluation_model" in ep.required


def test_cycle_via_module_overrides_is_rejected_naming_the_cycle() -> None:
    with pytest.raises(CatalogueError) as e:
        Catalogue.build(module_overrides={"load_prediction": {"deps": ["thermal_management"]}})
    msg = str(e.value)
    assert "dependency cycle" in msg
    assert "load_prediction" in msg and "thermal_management" in msg
    with pytest.raises(ConfigError, match="dependency cycle: .*thermal_management.*load_prediction"):
        Settings.from_dict({"modules": {"load_prediction": {"deps": ["thermal_management"]}}})


def test_unknown_topic_alias_module_and_dependency() -> None:
    with pytest.raises(CatalogueError, match="unknown topic alias 'car_orders'.*'car_order'"):
        Catalogue.build(topic_overrides={"car_orders": {"window_size": 5}})
    with pytest.raises(CatalogueError, match="unknown module 'soh_model'.*'SOH_model'"):
        Catalogue.build(module_overrides={"soh_model": {"runs": "off"}})
    with pytest.raises(CatalogueError, match="unknown input topic alias 'device_metre'"):
        Catalogue.build(module_overrides={"SOH_model": {"inputs": ["device_metre"]}})
    with pytest.raises(CatalogueError, match="unknown dependency 'pv_predictions'"):
        Catalogue.build(module_overrides={"SOH_model": {"deps": ["pv_predictions"]}})
    with pytest.raises(CatalogueError, match="unknown topic 'NOPE'"):
        default_catalogue().topic("NOPE")


def test_unknown_window_kind_and_trigger() -> None:
    with pytest.raises(CatalogueError, match="unknown window kind 'lastest'.*'latest'"):
        Catalogue.build(topic_overrides={"device_meter": {"kind": "lastest"}})
    with pytest.raises(CatalogueError, match="trigger 'device_meter' is not one of its inputs"):
        Catalogue.build(module_overrides={"SOH_model": {"triggers": ["device_meter"]}})


def test_duplicate_alias_and_topic_rejected(cat: Catalogue) -> None:
    t = cat.topic("device_meter")
    with pytest.raises(CatalogueError, match="duplicate alias 'device_meter'"):
        Catalogue((t, replace(t, topic="OTHER-METER")), ())
    with pytest.raises(CatalogueError, match="duplicate topic SCHEDULE-DEVICE-METER"):
        Catalogue((t, replace(t, alias="meter2")), ())
    with pytest.raises(ConfigError, match="'SCHEDULE-DEVICE-GUN' is already the topic of 'device_gun'"):
        Settings.from_dict({"topics": {"device_meter": {"topic": "SCHEDULE-DEVICE-GUN"}}})


def test_local_module_depending_on_off_module_rejected() -> None:
    with pytest.raises(CatalogueError, match="operation_optimization runs locally but depends on 'pv_prediction'"):
        Catalogue.build(module_overrides={"pv_prediction": {"runs": "off"}})
    # turning the dependents off too is a valid configuration
    c = Catalogue.build(module_overrides={
        "pv_prediction": {"runs": "off"},
        "operation_optimization": {"runs": "off"},
        "electricity_price": {"runs": "off"},
        "thermal_management": {"runs": "off"},
    })
    assert c.local_modules() == ("load_prediction", "evaluation_model", "SOH_model", "customer_mining",
                                 "station_guidance")


def test_external_module_output_is_consumed_local_one_is_not() -> None:
    c = Catalogue.build(module_overrides={"pv_prediction": {"runs": "external"}})
    consumed = {t.topic for t in c.consumed_topics()}
    assert "MODULE-OUTPUT-PV_PREDICTION" in consumed
    assert "MODULE-OUTPUT-LOAD_PREDICTION" not in consumed
    assert set(SPEC_INPUTS) <= consumed
    assert "pv_prediction" not in c.local_modules()


def test_overrides_change_derived_maps() -> None:
    c = Catalogue.build(
        topic_overrides={"device_gun": {"kind": "devices", "key_field": "hostCode", "ttl_s": 120}},
        module_overrides={"SOH_model": {"inputs": ["station_param", "device_gun"], "deps": []}},
        topic_names={"device_gun": "PLANT-GUN"},
    )
    gun = c.topic("PLANT-GUN")
    assert (gun.alias, gun.kind, gun.key_field, gun.ttl_s, gun.retention_s) == (
        "device_gun", "devices", "hostCode", 120, 7 * DAY
    )
    assert c.modules_using("device_gun") == ("SOH_model",)
    assert "SOH_model" not in c.modules_using("station_realtime_data")
