"""Readiness, triggers and the cascade (spec §4.3, §6.5)."""

from __future__ import annotations

import pytest

from parsers.catalogue import Catalogue, default_catalogue
from parsers.readiness import missing_required, plan_runs

pytestmark = pytest.mark.unit

CAT = default_catalogue()
ALL_TOPICS = {t.alias for t in CAT.input_topics}
BASICS = {"station_param", "station_realtime_data", "environment_calendar", "car_price",
          "device_host_dcdc", "device_host_acdc", "device_meter"}


def test_cascade_pv_to_operation_optimization_to_thermal_management() -> None:
    present = BASICS | {"device_pv", "environment_weather", "load_prediction"}
    plan = plan_runs(CAT, ["device_pv"], present)
    assert plan.runs == ("pv_prediction", "operation_optimization", "thermal_management")
    # electricity_price has pv_prediction among its triggers but lacks evaluation_model/SOH_model
    assert plan.not_ready == ("electricity_price",)


def test_cascade_stops_at_a_dependent_missing_another_required_dep() -> None:
    present = BASICS | {"device_pv", "environment_weather"}  # no load_prediction output
    plan = plan_runs(CAT, ["environment_weather"], present)
    assert plan.runs == ("pv_prediction", "operation_optimization")
    assert plan.not_ready == ("electricity_price", "thermal_management")


def test_scheduled_dep_counts_as_present() -> None:
    # no stored outputs at all: evaluation_model and SOH_model, scheduled first, satisfy
    # electricity_price; load_prediction + evaluation_model satisfy station_guidance
    plan = plan_runs(CAT, ["station_realtime_data"], BASICS)
    assert {"electricity_price", "station_guidance"} <= set(plan.runs)
    assert plan.runs.index("evaluation_model") < plan.runs.index("electricity_price")
    assert plan.runs.index("load_prediction") < plan.runs.index("station_guidance")
    # the same module without the scheduled upstreams is not ready
    assert plan_runs(CAT, ["device_meter"], BASICS).not_ready == ("electricity_price",)


def test_realtime_trigger_full_plan() -> None:
    plan = plan_runs(CAT, ["station_realtime_data"], BASICS)
    assert plan.runs == ("load_prediction", "evaluation_model", "SOH_model", "electricity_price",
                         "station_guidance")
    # thermal_management needs operation_optimization's output, which is neither stored nor scheduled
    assert plan.not_ready == ("thermal_management",)


def test_optional_inputs_do_not_block() -> None:
    # evaluation_model: car_order and device_storage are optional
    present = {"station_realtime_data", "car_price", "device_host_dcdc", "device_host_acdc"}
    assert plan_runs(CAT, ["device_host_acdc"], present).runs == ("evaluation_model",)
    # without device_host_acdc (required) it is not ready
    plan = plan_runs(CAT, ["car_price"], present - {"device_host_acdc"})
    assert "evaluation_model" in plan.not_ready and "evaluation_model" not in plan.runs


def test_module_configuration_changes_optional_and_triggers() -> None:
    cat = Catalogue.build(module_overrides={
        "pv_prediction": {"optional": ["environment_weather"]},
        "SOH_model": {"triggers": ["device_error"]},
    })
    assert plan_runs(cat, ["device_pv"], {"device_pv"}).runs[0] == "pv_prediction"
    assert plan_runs(CAT, ["device_pv"], {"device_pv"}).runs == ()
    present = {"station_param", "station_realtime_data", "environment_calendar"}
    assert "SOH_model" not in plan_runs(cat, ["station_realtime_data"], present).runs
    assert plan_runs(cat, ["device_error"], present).runs == ("SOH_model",)


def test_customer_mining_is_never_triggered_by_data() -> None:
    every = ALL_TOPICS | set(CAT.by_module)
    plan = plan_runs(CAT, every, every)
    assert "customer_mining" not in plan.runs and "customer_mining" not in plan.not_ready
    assert set(plan.runs) == set(CAT.local_modules()) - {"customer_mining"}
    assert list(plan.runs) == CAT.sort_modules(plan.runs)


def test_changed_dep_output_triggers_dependents() -> None:
    present = {"car_order", "load_prediction", "evaluation_model"}
    assert plan_runs(CAT, ["evaluation_model"], present).runs == ("station_guidance",)


def test_nothing_changed_nothing_runs() -> None:
    plan = plan_runs(CAT, [], ALL_TOPICS | set(CAT.by_module))
    assert (plan.runs, plan.not_ready) == ((), ())


def test_unused_topic_triggers_nothing() -> None:
    assert plan_runs(CAT, ["device_gun"], ALL_TOPICS).runs == ()


def test_external_and_off_modules_are_not_planned() -> None:
    cat = Catalogue.build(module_overrides={"load_prediction": {"runs": "external"},
                                            "thermal_management": {"runs": "off"}})
    present = BASICS | {"car_order"}
    plan = plan_runs(cat, ["station_realtime_data"], present)
    assert "load_prediction" not in plan.runs
    assert "station_guidance" not in plan.runs  # load_prediction output absent and not scheduled here
    plan = plan_runs(cat, ["load_prediction"], present | {"load_prediction", "evaluation_model"})
    assert plan.runs == ("station_guidance",)  # thermal_management is off: neither run nor counted
    assert plan.not_ready == ()


def test_missing_required_at_run_start() -> None:
    spec = CAT.module("thermal_management")
    assert missing_required(spec, {"station_realtime_data", "car_price"}) == (
        "device_host_dcdc", "device_host_acdc", "load_prediction", "operation_optimization")
    assert missing_required(CAT.module("customer_mining"), set()) == ()
