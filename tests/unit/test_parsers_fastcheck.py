"""The generated all-or-nothing field predicate must agree with the step-by-step checks: it
accepts an element only when they would not raise, and refuses every element they reject
(a refusal only costs time, an acceptance decides the outcome)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from samplefiles import SAMPLES

from parsers.catalogue import default_catalogue
from parsers.fields import FIELD_TYPES, ElementError, _explain, _fast_check, check_fields

pytestmark = [pytest.mark.unit, pytest.mark.heavy(33)]

CAT = default_catalogue()

scalars = (st.none() | st.booleans() | st.integers(min_value=-3, max_value=3) | st.floats(-2, 2)
           | st.sampled_from(["2025-11-19 10:00:00", "2025-11-19 25:00:00", "2025-11-19", "2025-02-30",
                              "00", "04", "05", "", "x"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(["gunNo", "outputPowerPerGunAvg", "outputPowerPerGunMax", "powerIds", "a"]), inner,
    max_size=3), max_leaves=8)


def _elements(alias: str) -> list[dict]:
    spec = CAT.by_alias[alias]
    obj = orjson.loads((SAMPLES / f"{spec.topic}.json").read_bytes())
    if type(obj) is dict and spec.wrapper_key and spec.wrapper_key in obj:
        obj = obj[spec.wrapper_key]
    return [e for e in (obj if type(obj) is list else [obj]) if type(e) is dict]


ALIASES = sorted(a for a in FIELD_TYPES if (SAMPLES / f"{CAT.by_alias[a].topic}.json").exists())


def _slow_accepts(alias: str, el: dict, required: tuple[str, ...]) -> bool:
    try:
        _explain(alias, el, required)
    except ElementError:
        return False
    return True


@pytest.mark.parametrize("alias", ALIASES)
def test_samples_take_the_fast_path(alias: str) -> None:
    required = CAT.by_alias[alias].required_fields
    els = _elements(alias)
    assert els
    for el in els:
        assert _fast_check(alias, required)(el) is True
        assert _slow_accepts(alias, el, required)


@pytest.mark.parametrize("alias", ALIASES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fast_predicate_matches_step_by_step_checks(alias: str, data) -> None:
    required = CAT.by_alias[alias].required_fields
    el = dict(data.draw(st.sampled_from(_elements(alias))))
    fields = sorted({f.split(".")[0] for f in FIELD_TYPES[alias]} | set(required) | set(el))
    for _ in range(data.draw(st.integers(1, 3))):
        f = data.draw(st.sampled_from(fields))
        if data.draw(st.booleans()):
            el.pop(f, None)
        else:
            el[f] = data.draw(values)
    try:
        fast = _fast_check(alias, required)(el)
    except (TypeError, AttributeError):
        fast = None  # the checks crash alike on some shapes (parse_message dead-letters them)
    if fast is None:
        with pytest.raises((TypeError, AttributeError)):
            _explain(alias, el, required)
        return
    try:
        slow = _slow_accepts(alias, el, required)
    except (TypeError, AttributeError):
        slow = None
    assert fast == slow, el
    if not fast:
        with pytest.raises(ElementError):
            check_fields(alias, el, required)
