"""build_input with a per-job `shared` cache: the same inputs as without it, one grid build per
window, and a module changing its grid in place leaves the other modules' grids alone."""

from __future__ import annotations

import pytest

import parsers.inputs as inputs
from parsers.catalogue import default_catalogue
from parsers.inputs import build_input
from parsers.windows import make_item

pytestmark = pytest.mark.unit

CAT = default_catalogue()
NOW = 1_763_524_800_000
GRID_MODULES = [m for m in CAT.local_modules() if "station_realtime_data" in CAT.by_module[m].inputs]


def windows() -> dict:
    hours = {}
    for h in range(0, 20, 2):  # every other hour: filled gaps in the grid
        key = f"2025-11-19 {h:02d}:00:00"
        hours[key] = make_item(NOW - 1000 * h, f"rt:0:{h}", {
            "stationId": "S", "sendTime": key, "outputPowerPerStationAvg": 10.0 + h,
            "gunPower": {"gunNo": ["01", "02"], "outputPowerPerGunAvg": [1.0 * h, 2.0],
                         "outputPowerPerGunMax": [3.0, 4.0 * h]}})
    return {"station_realtime_data": hours,
            "station_param": make_item(NOW - 5, "p:0:1", {"stationId": "S", "gunNum": 2})}


def test_shared_inputs_equal_unshared_ones_for_every_module() -> None:
    assert len(GRID_MODULES) >= 3
    w = windows()
    shared: dict = {}
    for mod in CAT.local_modules():
        mw = {n: w.get(n) for n in CAT.by_module[mod].all_inputs}
        assert build_input(CAT, mod, "S", mw, NOW, shared) == build_input(CAT, mod, "S", mw, NOW)
    assert set(shared) == {"station_realtime_data"}


def test_the_grid_is_built_once_per_window(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = inputs.realtime_grid
    monkeypatch.setattr(inputs, "realtime_grid", lambda *a: calls.append(1) or real(*a))
    w = windows()
    shared: dict = {}
    for mod in GRID_MODULES:
        build_input(CAT, mod, "S", w, NOW, shared)
    assert len(calls) == 1
    w2 = windows()  # another window object (another station, another job): built again
    build_input(CAT, GRID_MODULES[0], "S", w2, NOW, shared)
    assert len(calls) == 2


def test_a_module_mutating_its_grid_does_not_touch_the_next_ones() -> None:
    w = windows()
    shared: dict = {}
    first = build_input(CAT, GRID_MODULES[0], "S", w, NOW, shared)
    grid = first["topics"]["station_realtime_data"]
    expected = build_input(CAT, GRID_MODULES[1], "S", w, NOW)["topics"]["station_realtime_data"]
    grid["outputPowerPerGunAvg"][-1][0] = -99.0
    grid["outputPowerPerStationAvg"].append(-1.0)
    grid["gunNo"].clear()
    second = build_input(CAT, GRID_MODULES[1], "S", w, NOW, shared)["topics"]["station_realtime_data"]
    assert second == expected
    assert second["outputPowerPerGunAvg"][-1][0] == 18.0 and second["gunNo"] == ["01", "02"]


def test_a_memoised_grid_is_kept_untracked_by_the_garbage_collector() -> None:
    """A window carrying a `views` dict (store.memo) keeps its grid with tuples, which the
    collector stops tracking, so its full passes do not walk every memoised hour; the modules
    still get lists, equal to an unshared build."""
    import gc

    class Memoised(dict):
        views: dict = {}

    w = windows()
    window = Memoised(w["station_realtime_data"])
    window.views = {}
    mod = GRID_MODULES[0]
    mw = {n: w.get(n) for n in CAT.by_module[mod].all_inputs} | {"station_realtime_data": window}
    got = build_input(CAT, mod, "S", mw, NOW, {})
    assert got == build_input(CAT, mod, "S", {**mw, "station_realtime_data": w["station_realtime_data"]}, NOW)
    (kept,) = window.views.values()
    gc.collect()
    assert not [k for k, v in kept.value.items() if isinstance(v, (list, tuple)) and gc.is_tracked(v)]
