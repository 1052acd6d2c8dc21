"""The console's pure parts: chart series from windows, the forecast-against-actual error, the
sampler's rates, dead-letter station attribution, loopback detection."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stationflow.commands.console_cmd import is_loopback
from stationflow.console import charts
from stationflow.console.pages import batch_stats, paused
from stationflow.console.reads import station_of_raw
from stationflow.console.sampler import rates_from
from stationflow.testing import sample_windows

pytestmark = pytest.mark.unit


def _ms(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp() * 1000)


def _hour(h: str, avg: float) -> dict:
    return {"ts": 0, "src": "t:0:0", "payload": {"outputPowerPerStationAvg": avg, "outputPowerPerStationMax": avg * 2}}


def test_realtime_curve_is_in_hour_order_with_both_series():
    window = {"2025-11-19 02:00:00": _hour("", 30.0), "2025-11-19 01:00:00": _hour("", 10.0),
              "2025-11-19 03:00:00": {"ts": 0, "payload": {}}}
    c = charts.realtime_curve(window)
    assert c["kind"] == "time"
    assert c["x"] == [_ms("2025-11-19 01:00") // 1000, _ms("2025-11-19 02:00") // 1000, _ms("2025-11-19 03:00") // 1000]
    assert c["series"][0]["values"] == [10.0, 30.0, None]  # an hour without the field is a gap
    assert c["series"][1]["values"] == [20.0, 60.0, None]
    assert charts.realtime_curve(None) is None and charts.realtime_curve({}) is None


def test_prediction_hours_start_at_start_hour_nearest_the_output():
    out = {"ts": _ms("2025-11-19 23:20"), "payload": {"prediction": [1.0] * 24, "start_hour": 0}}
    hours = charts.prediction_hours(out)
    assert hours[0] == _ms("2025-11-20 00:00") // 1000 and hours[1] - hours[0] == 3600 and len(hours) == 24
    out = {"ts": _ms("2025-11-19 07:10"), "payload": {"prediction": [1.0] * 3, "start_hour": 7}}
    assert charts.prediction_hours(out)[0] == _ms("2025-11-19 07:00") // 1000
    assert charts.prediction_hours({"ts": 0, "payload": {"prediction": "x"}}) == []


def test_forecast_error_is_the_mean_absolute_difference_over_hours_with_both():
    window = {f"2025-11-19 {h:02d}:00:00": _hour("", 100.0 + h) for h in range(0, 12)}
    newer = {"ts": _ms("2025-11-19 09:50"), "payload": {"prediction": [110.0, 112.0, 200.0], "start_hour": 10}}
    older = {"ts": _ms("2025-11-19 07:50"), "payload": {"prediction": [98.0, 0.0, 0.0], "start_hour": 8}}
    c = charts.forecast_vs_actual([newer, older], window)  # newest first, as Redis keeps them
    x = c["x"]
    fc = dict(zip(x, c["series"][1]["values"], strict=True))
    act = dict(zip(x, c["series"][0]["values"], strict=True))
    t = {h: _ms(f"2025-11-19 {h:02d}:00") // 1000 for h in range(8, 13)}
    # 08: older 98 vs 108; 09: older 0 vs 109; 10: newer 110 (overrides older's 0) vs 110; 11: 112 vs 111
    assert [fc[t[h]] for h in (8, 9, 10, 11, 12)] == [98.0, 0.0, 110.0, 112.0, 200.0]
    assert act[t[12]] is None  # not recorded yet: a gap, not a zero
    assert c["error"] == {"mae_kw": round((10 + 109 + 0 + 1) / 4, 3), "hours_compared": 4}
    assert charts.forecast_vs_actual([], window) is None


def test_tariff_slots_have_48_prices_per_record():
    _, windows = sample_windows()
    price = windows["car_price"]
    c = charts.tariff_slots(price, {"payload": {"price_curve": [1.0] * 48}})
    assert c["x"] == [i / 2 for i in range(48)]
    assert all(len(s["values"]) == 48 for s in c["series"])
    assert c["series"][-1]["label"] == "electricity_price"
    assert any(v is not None for v in c["series"][0]["values"])


def test_station_charts_draw_only_windows_that_exist():
    ids = [c["id"] for c in charts.station_charts({}, {})]
    assert ids == []
    _, windows = sample_windows()
    got = [c["id"] for c in charts.station_charts(windows, {})]
    assert got == ["realtime", "pv", "storage", "tariff", "orders"]  # no load prediction: no forecast chart


def test_rates_between_readings():
    readings = [(0, {"A": {"messages": 0, "records": 0}}),
                (2000, {"A": {"messages": 10, "records": 40}, "B": {"messages": 2, "records": 2}}),
                (4000, {"A": {"messages": 10, "records": 40}, "B": {"messages": 6, "records": 6}})]
    r = rates_from(readings)
    assert r["t"] == [2.0, 4.0] and r["every_s"] == 2.0
    assert r["topics"]["A"] == {"messages": [5.0, 0.0], "records": [20.0, 0.0]}
    assert r["topics"]["B"]["messages"] == [None, 2.0]  # B had no earlier reading
    assert rates_from([]) == {"t": [], "topics": {}, "every_s": None}


def test_station_of_raw_reads_the_first_station_id():
    assert station_of_raw(b'[{"stationId":"1053405539402387456","x":1}]') == "1053405539402387456"
    assert station_of_raw(b'{"stationId": 42}') == "42"
    assert station_of_raw(b"\xff\xfe") is None and station_of_raw(b"") is None


def test_loopback_names():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "::", "example.org"))


def test_paused_and_batch_stats():
    assert paused({"pauses": 2, "resumes": 1}) and not paused({"pauses": 1, "resumes": 1}) and not paused({})
    rows = [{"state": "uploaded", "created": 0, "finished": 30}, {"state": "uploaded", "created": 10, "finished": 20},
            {"state": "open", "created": 5, "finished": None}]
    s = batch_stats(rows)
    assert s["by_state"] == {"uploaded": 2, "open": 1}
    assert (s["upload_ms_mean"], s["upload_ms_p50"], s["upload_ms_max"]) == (20.0, 30, 30)


def test_stations_page_marks_windows_older_than_their_ttl_stale(fake_redis):
    from stationflow.console import pages
    from stationflow.settings import Settings
    from store.keys import Keys

    settings = Settings.load(env={})
    k, now = Keys(settings.prefix), 10_000_000_000
    fake_redis.zadd(k.stations, {"S1": now - 1000, "S2": now - 5000})
    fake_redis.hset(k.meta("S1"), mapping={"ts:device_meter": now - 901_000,  # ttl 900 s: stale
                                           "ts:device_gun": now - 59_000,      # ttl 60 s: fresh
                                           "ts:station_param": 0,              # no ttl: never stale
                                           "hwm:SCHEDULE-DEVICE-METER:0": 4})
    rows = {x["station"]: x for x in pages.stations(fake_redis, settings, now)["stations"]}
    assert rows["S1"]["stale"] == ["device_meter"] and rows["S2"]["stale"] == []
    assert rows["S1"]["last_seen_age_s"] == 1.0 and list(rows) == ["S1", "S2"]
    assert rows["S1"]["dead_letters"] == 0 and rows["S1"]["failed_runs"] == 0
