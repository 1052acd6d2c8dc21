"""Per-alias input values (spec §6.3): the realtime grid, price records and slot prices,
devices and calendar ordering."""

from __future__ import annotations

import pytest

from parsers.catalogue import Catalogue, default_catalogue
from parsers.fees import SLOTS, normalise_fee_record, slot_codes, slot_prices
from parsers.inputs import price_records, realtime_grid, topic_view
from parsers.windows import hour_index, hour_key, make_item

pytestmark = pytest.mark.unit

CAT = default_catalogue()
RT = CAT.topic("station_realtime_data")


def hour_item(h: str, guns, avg, mx, st_avg=None, st_max=None, ts: int = 1):
    p = {"stationId": "S", "sendTime": h, "gunPower": {"gunNo": guns, "outputPowerPerGunAvg": avg,
                                                       "outputPowerPerGunMax": mx}}
    if st_avg is not None:
        p["outputPowerPerStationAvg"] = st_avg
    if st_max is not None:
        p["outputPowerPerStationMax"] = st_max
    return make_item(ts, "rt:0:1", p)


def test_grid_with_a_gap_and_a_gun_only_in_some_hours() -> None:
    w = {
        "2025-11-19 08:00:00": hour_item("2025-11-19 08:00:00", ["01"], [1.0], [2.0], 1.0, 2.0, ts=5),
        # 09:00 missing
        "2025-11-19 10:00:00": hour_item("2025-11-19 10:00:00", ["02", "01"], [3.0, None], [4.0, 5.0], None, 9.0,
                                         ts=7),
    }
    g = realtime_grid(w, 4, 0.0)
    assert g["sendTime"] == ["2025-11-19 07:00:00", "2025-11-19 08:00:00", "2025-11-19 09:00:00",
                             "2025-11-19 10:00:00"]
    assert g["filled"] == [True, False, True, False]
    assert g["gunNo"] == ["01", "02"]
    assert g["outputPowerPerGunAvg"] == [[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 3.0]]
    assert g["outputPowerPerGunMax"] == [[0.0, 0.0], [2.0, 0.0], [0.0, 0.0], [5.0, 4.0]]
    assert g["outputPowerPerStationAvg"] == [0.0, 1.0, 0.0, 0.0]
    assert g["outputPowerPerStationMax"] == [0.0, 2.0, 0.0, 9.0]
    for key in ("sendTime", "filled", "outputPowerPerGunAvg", "outputPowerPerGunMax",
                "outputPowerPerStationAvg", "outputPowerPerStationMax"):
        assert len(g[key]) == 4
    assert all(len(row) == len(g["gunNo"]) for row in g["outputPowerPerGunAvg"] + g["outputPowerPerGunMax"])


def test_grid_fill_null_and_default_size() -> None:
    w = {"2025-11-19 10:00:00": hour_item("2025-11-19 10:00:00", ["01"], [None], [2.0])}
    g = realtime_grid(w, RT.window_size, None)
    assert len(g["sendTime"]) == 168 and g["sendTime"][-1] == "2025-11-19 10:00:00"
    assert g["sendTime"][0] == hour_key(hour_index("2025-11-19 10:00:00") - 167)
    assert g["filled"].count(False) == 1
    assert g["outputPowerPerGunAvg"][-1] == [None] and g["outputPowerPerGunMax"][-1] == [2.0]
    assert g["outputPowerPerStationAvg"] == [None] * 168


def test_grid_ends_at_newest_stored_hour_and_drops_older_than_window() -> None:
    w = {
        "2025-11-10 00:00:00": hour_item("2025-11-10 00:00:00", ["09"], [9.0], [9.0]),
        "2025-11-19 10:00:00": hour_item("2025-11-19 10:00:00", ["01"], [1.0], [1.0]),
    }
    g = realtime_grid(w, 3, 0.0)
    assert g["sendTime"][-1] == "2025-11-19 10:00:00" and g["gunNo"] == ["01"]


def test_grid_crosses_midnight_and_month_end() -> None:
    w = {"2025-12-01 01:00:00": hour_item("2025-12-01 01:00:00", [], [], [])}
    g = realtime_grid(w, 3, 0.0)
    assert g["sendTime"] == ["2025-11-30 23:00:00", "2025-12-01 00:00:00", "2025-12-01 01:00:00"]
    assert g["gunNo"] == [] and g["outputPowerPerGunAvg"] == [[], [], []]


def test_topic_view_realtime_uses_topic_fill_and_size() -> None:
    cat = Catalogue.build(topic_overrides={"station_realtime_data": {"window_size": 2, "fill": None}})
    w = {"2025-11-19 10:00:00": hour_item("2025-11-19 10:00:00", ["01"], [1.0], [1.0], ts=123)}
    v = topic_view(cat.topic("station_realtime_data"), w, 1000)
    assert v.present and v.ts_ms == 123
    assert v.value["filled"] == [True, False] and v.value["outputPowerPerStationAvg"] == [None, None]


# ---- price ------------------------------------------------------------------------------------

def fee(send_time: str, codes: dict[int, str], **fees) -> dict:
    r = {"stationId": "S", "sendTime": send_time, "dialNo": "1", **fees}
    r.update({f"feeNo{k}": c for k, c in codes.items()})
    return r


def test_price_records_sorted_and_normalised() -> None:
    a = fee("2025-11-20 00:00:01", {1: "03", 48: "00"})
    b = fee("2025-11-19 00:00:00", {2: "01"})
    out = price_records([a, b])
    assert [r["sendTime"] for r in out] == ["2025-11-19 00:00:00", "2025-11-20 00:00:01"]
    assert all(len(r["feeNo"]) == SLOTS for r in out)
    assert out[1]["feeNo"][0] == "03" and out[1]["feeNo"][47] == "00" and out[1]["feeNo"][1] is None
    assert not any(k.startswith("feeNo") and k != "feeNo" for r in out for k in r)
    assert out[0]["dialNo"] == "1"


def test_slot_prices_add_electric_and_service_fee_of_each_class() -> None:
    r = fee("2025-11-19 00:00:00", {k: ("03" if k <= 16 else "01" if k <= 40 else "00") for k in range(1, 48)},
            ebbElectricFee=0.3215, ebbServerFee=0.4, peakElectricFee=1.0, peakServerFee=0.6,
            sharpElectricFee=1.25, sharpServerFee=0.5)
    prices = slot_prices(r)
    assert len(prices) == 48
    assert prices[0] == pytest.approx(0.7215) and prices[15] == pytest.approx(0.7215)
    assert prices[16] == pytest.approx(1.6) and prices[40] == pytest.approx(1.75)
    assert prices[47] is None  # slot 48 missing
    assert slot_prices(normalise_fee_record(r)) == prices
    assert slot_codes(normalise_fee_record(r))[47] is None


def test_slot_price_unknown_when_class_fee_missing() -> None:
    r = fee("2025-11-19 00:00:00", {1: "02", 2: "04"}, flatElectricFee=0.6)
    assert slot_prices(r)[:2] == [None, None]


def test_price_view_from_sample_record_list() -> None:
    spec = CAT.topic("car_price")
    item = make_item(9, "p:0:1", [fee("2025-11-19 18:58:14", {1: "02"}), fee("2025-11-19 18:58:13", {1: "03"})])
    v = topic_view(spec, item, 10)
    assert [r["feeNo"][0] for r in v.value] == ["03", "02"]


# ---- devices, calendar ------------------------------------------------------------------------

def test_devices_sorted_by_key_with_record_timestamp() -> None:
    spec = CAT.topic("device_host_acdc")
    w = {"H2": make_item(50_000, "a:0:1", {"hostCode": "H2", "acPower": 2.0}),
         "H1": make_item(40_000, "a:0:2", {"hostCode": "H1", "acPower": 1.0}),
         "H0": make_item(1_000, "a:0:3", {"hostCode": "H0", "acPower": 0.0})}
    v = topic_view(spec, w, 100_000)  # TTL 60 s hides H0
    assert v.value == [{"hostCode": "H1", "acPower": 1.0, "_ts_ms": 40_000},
                       {"hostCode": "H2", "acPower": 2.0, "_ts_ms": 50_000}]
    assert v.ts_ms == 50_000


def test_calendar_ascending_by_date() -> None:
    spec = CAT.topic("environment_calendar")
    w = {d: make_item(1, "c:0:1", {"date": d, "isHoliday": 0}) for d in ("2026-01-01", "2025-11-17", "2025-12-31")}
    assert [d["date"] for d in topic_view(spec, w, 2).value] == ["2025-11-17", "2025-12-31", "2026-01-01"]
