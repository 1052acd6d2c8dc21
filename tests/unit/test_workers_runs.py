"""workers.runs.classify_run: the one classification of a module run (station job and
stationflow.testing.run_algorithm)."""

import math
import time

import pytest

from parsers.catalogue import default_catalogue
from workers.runs import classify_run

pytestmark = pytest.mark.unit

CAT = default_catalogue()
SOH = CAT.module("SOH_model")


def _input(available):
    return {"stationId": "S1", "_data_quality": {"available_topics": list(available)}}


FULL = _input(SOH.all_inputs)


def test_missing_required_input_is_not_ready_and_never_calls_the_algorithm():
    called = []
    run = classify_run(lambda s, i: called.append(1), SOH, "S1", _input(()))
    assert (run.outcome, run.reason, called) == ("failed", "not_ready", [])
    assert run.missing and not run.returned


def test_missing_input_of_a_module_that_failed_earlier_is_upstream_failed():
    dep = next(iter(SOH.required), None)
    assert dep is not None
    run = classify_run(lambda s, i: {}, SOH, "S1", _input([n for n in SOH.all_inputs if n != dep]),
                       failed_upstream={dep})
    assert (run.outcome, run.reason) == ("failed", "upstream_failed")


def test_outcomes_of_a_called_algorithm():
    assert classify_run(lambda s, i: None, SOH, "S1", FULL).outcome == "none"
    ok = classify_run(lambda s, i: {"v": 1}, SOH, "S1", FULL)
    assert ok.outcome == "ok" and ok.returned and ok.result is not None

    def boom(s, i):
        raise RuntimeError("x")

    exc = classify_run(boom, SOH, "S1", FULL)
    assert (exc.outcome, exc.reason, type(exc.error)) == ("failed", "exception", RuntimeError)
    assert not exc.returned
    bad = classify_run(lambda s, i: {"v": object()}, SOH, "S1", FULL)
    assert (bad.outcome, bad.reason, bad.returned) == ("failed", "unserialisable", True)
    nonfinite = classify_run(lambda s, i: {"v": math.nan}, SOH, "S1", FULL)
    assert nonfinite.outcome == "ok" and nonfinite.result.nonfinite == 1


def test_timeout():
    run = classify_run(lambda s, i: time.sleep(2), SOH, "S1", FULL, timeout_s=0.05)
    assert (run.outcome, run.reason, run.returned) == ("failed", "timeout", False)
