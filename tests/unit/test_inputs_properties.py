"""Property tests of module inputs: the realtime grid is always aligned and faithful, and any
stored payload shape yields a JSON-serialisable input for every module in both layouts."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parsers.catalogue import Catalogue, default_catalogue
from parsers.inputs import build_input, realtime_grid
from parsers.windows import hour_index, hour_key, make_item

pytestmark = [pytest.mark.unit, pytest.mark.heavy(19)]

CAT = default_catalogue()
FLAT = Catalogue.build(module_overrides={m: {"layout": "flat"} for m in CAT.by_module})
BASE = hour_index("2025-11-01 00:00:00")
GUNS = ["01", "02", "03", "04", "05", "06"]

power = st.none() | st.floats(0, 500, allow_nan=False)
hour_payload = st.builds(
    lambda guns, vals, st_avg, st_max: {
        "gunPower": {"gunNo": guns, "outputPowerPerGunAvg": [v[0] for v in vals[: len(guns)]],
                     "outputPowerPerGunMax": [v[1] for v in vals[: len(guns)]]},
        "outputPowerPerStationAvg": st_avg, "outputPowerPerStationMax": st_max},
    st.lists(st.sampled_from(GUNS), unique=True, max_size=6),
    st.lists(st.tuples(power, power), min_size=6, max_size=6),
    power, power,
)


@given(hours=st.dictionaries(st.integers(0, 300), hour_payload, min_size=1, max_size=30),
       size=st.integers(1, 200), fill=st.sampled_from([0.0, None]))
def test_grid_is_aligned_and_faithful(hours, size, fill) -> None:
    window = {hour_key(BASE + h): make_item(h, "rt:0:1", p) for h, p in hours.items()}
    g = realtime_grid(window, size, fill)
    newest = max(hours)
    in_grid = {h: p for h, p in hours.items() if h > newest - size}
    assert g["sendTime"] == [hour_key(BASE + h) for h in range(newest - size + 1, newest + 1)]
    for key in ("filled", "outputPowerPerGunAvg", "outputPowerPerGunMax",
                "outputPowerPerStationAvg", "outputPowerPerStationMax"):
        assert len(g[key]) == size
    # union of guns in first-seen order, oldest hour first
    union: list[str] = []
    for h in sorted(in_grid):
        for gun in in_grid[h]["gunPower"]["gunNo"]:
            if gun not in union:
                union.append(gun)
    assert g["gunNo"] == union
    for i, h in enumerate(range(newest - size + 1, newest + 1)):
        row_avg, row_max = g["outputPowerPerGunAvg"][i], g["outputPowerPerGunMax"][i]
        assert len(row_avg) == len(union) == len(row_max)
        p = in_grid.get(h)
        assert g["filled"][i] is (p is None)
        if p is None:
            assert row_avg == [fill] * len(union) and g["outputPowerPerStationAvg"][i] == fill
            continue
        gp = p["gunPower"]
        for gun, avg, mx in zip(gp["gunNo"], gp["outputPowerPerGunAvg"], gp["outputPowerPerGunMax"], strict=True):
            j = union.index(gun)
            assert row_avg[j] == (fill if avg is None else avg)
            assert row_max[j] == (fill if mx is None else mx)
        for gun in set(union) - set(gp["gunNo"]):
            assert row_avg[union.index(gun)] == fill
        sa = p["outputPowerPerStationAvg"]
        assert g["outputPowerPerStationAvg"][i] == (fill if sa is None else sa)


junk = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5) | st.sampled_from(["2025-11-19 10:00:00", "01", "03"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["gunPower", "gunNo", "hostCode", "dcWorkStatus", "dcdcPower", "feeNo1", "sendTime",
                         "outputPowerPerGunAvg", "station_id", "stationId", "date", "x"]), inner, max_size=5),
    max_leaves=12,
)


def window_for(alias_or_module: str, payload, ts: int):
    t = CAT.by_alias[alias_or_module]
    item = make_item(ts, "t:0:1", payload)
    if t.kind == "hourly":
        return {"2025-11-19 10:00:00": item, "2025-11-19 07:00:00": make_item(ts - 1, "t:0:0", payload)}
    if t.kind in ("devices", "global"):
        return {"k2": item, "k1": item}
    if t.kind == "orders":
        return [{"seq": 1, "second": ts // 1000, "late": False, "orders": [item, item]}]
    return item


@given(payloads=st.fixed_dictionaries({t.alias: junk for t in CAT.topics}), ts=st.integers(0, 2 * 10**12),
       now=st.integers(0, 2 * 10**12))
def test_any_stored_payload_builds_a_json_input(payloads, ts, now) -> None:
    windows = {name: window_for(name, p, ts) for name, p in payloads.items()}
    for module in CAT.order:
        for cat in (CAT, FLAT):
            x = build_input(cat, module, "S", windows, now)
            orjson.dumps(x)
            assert x["stationId"] == "S"
            q = x["_data_quality"]
            assert q["total_topics"] == len(cat.module(module).all_inputs)
            assert all(v >= 0 for v in q["age_s"].values())
