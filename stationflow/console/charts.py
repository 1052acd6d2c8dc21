"""Chart series for the station page, drawn the way a person would draw each window.

Pure: windows and outputs (as `inspection.read_station` returns them) in, plain JSON-able series
out. Every chart is `{"id", "title", "x": [...], "series": [{"label", "values", "unit"}], "kind"}`
where `kind` tells the page how to draw it ("time": x is unix seconds; "slots": x is an hour
of day, possibly fractional; "bars": x is a category index with `labels`). `None` is a gap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from parsers.fees import slot_prices

HOUR_FMT = "%Y-%m-%d %H:%M:%S"


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def hour_epoch(hour: str) -> int | None:
    """'YYYY-MM-DD HH:00:00' (the windows' hour keys, UTC) as unix seconds."""
    try:
        return int(datetime.strptime(hour, HOUR_FMT).replace(tzinfo=UTC).timestamp())
    except (TypeError, ValueError):
        return None


def chart(cid: str, title: str, kind: str, x: Sequence[Any], series: list[dict[str, Any]],
          **extra: Any) -> dict[str, Any]:
    return {"id": cid, "title": title, "kind": kind, "x": list(x), "series": series, **extra}


def realtime_curve(window: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The hourly station power (mean and max, kW) over the stored hours (168 when full)."""
    if not window:
        return None
    hours = sorted(h for h in window if hour_epoch(h) is not None)
    pay = [window[h].get("payload") or {} for h in hours]
    return chart("realtime", "Station power per hour (kW)", "time", [hour_epoch(h) for h in hours], [
        {"label": "mean kW", "unit": "kW", "values": [_num(p.get("outputPowerPerStationAvg")) for p in pay]},
        {"label": "max kW", "unit": "kW", "values": [_num(p.get("outputPowerPerStationMax")) for p in pay]},
    ])


def pv_curve(window: Mapping[str, Any] | None, prediction: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The PV array's own DC forecast by hour of day and, beside it, pv_prediction's output."""
    pv = (window or {}).get("payload") or {}
    raw = pv.get("pvPreDcPower") if isinstance(pv, Mapping) else None
    pred = ((prediction or {}).get("payload") or {}).get("prediction")
    if not raw and not pred:
        return None
    n = max(len(raw or []), len(pred or []))
    series = [{"label": "array forecast kW", "unit": "kW", "values": [_num(v) for v in (raw or [])] + [None] * (n - len(raw or []))}]
    if pred:
        series.append({"label": "pv_prediction kW", "unit": "kW",
                       "values": [_num(v) for v in pred] + [None] * (n - len(pred))})
    return chart("pv", "PV output by hour (kW)", "slots", list(range(n)), series)


def storage_bars(window: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """State of charge and health (%) of every storage group, one bar each."""
    if not window:
        return None
    keys = sorted(window)
    pay = [window[k].get("payload") or {} for k in keys]
    return chart("storage", "Storage state (%)", "bars", list(range(len(keys))), [
        {"label": "SOC %", "unit": "%", "values": [_num(p.get("batteryGroupSoc")) for p in pay]},
        {"label": "SOH %", "unit": "%", "values": [_num(p.get("batteryGroupSoh")) for p in pay]},
    ], labels=keys)


def tariff_slots(window: Mapping[str, Any] | None, price_output: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The 48 half-hour prices of the first tariff record (a step line) and, if there is one,
    electricity_price's price curve over the same slots."""
    recs = (window or {}).get("payload")
    recs = recs if isinstance(recs, list) else [recs] if isinstance(recs, Mapping) else []
    if not recs:
        return None
    x = [i / 2 for i in range(48)]
    series = [{"label": f"tariff {str(r.get('startTime') or '')[:10] or i + 1}", "unit": "price",
               "values": [None if p is None else round(p, 4) for p in slot_prices(r)]} for i, r in enumerate(recs[:3])]
    curve = ((price_output or {}).get("payload") or {}).get("price_curve")
    if isinstance(curve, list) and len(curve) == 48:
        series.append({"label": "electricity_price", "unit": "price", "values": [_num(v) for v in curve]})
    return chart("tariff", "Tariff, 48 half-hour slots", "slots", x, series)


def orders_per_second(window: Sequence[Mapping[str, Any]] | None) -> dict[str, Any] | None:
    """Car orders in each closed order second (x: the second, unix seconds)."""
    if not window:
        return None
    rows = sorted(window, key=lambda s: s["second"])
    return chart("orders", "Car orders per closed second", "time", [int(s["second"]) for s in rows], [
        {"label": "orders", "unit": "orders", "values": [len(s["orders"]) for s in rows]},
    ])


def prediction_hours(output: Mapping[str, Any]) -> list[int]:
    """Unix hours a load prediction covers: it starts at `start_hour` (hour of day, UTC, the
    hour after the newest stored hour at run time), on the day that puts the start closest to
    the output's own timestamp."""
    payload = output.get("payload") or {}
    pred, start = payload.get("prediction"), payload.get("start_hour")
    if not isinstance(pred, list) or not isinstance(start, int):
        return []
    made = datetime.fromtimestamp(int(output["ts"]) / 1000, tz=UTC).replace(minute=0, second=0, microsecond=0)
    candidates = [made.replace(hour=start) + timedelta(days=d) for d in (-1, 0, 1)]
    first = min(candidates, key=lambda c: abs((c - made).total_seconds()))
    return [int((first + timedelta(hours=i)).timestamp()) for i in range(len(pred))]


def forecast_vs_actual(outputs: Sequence[Mapping[str, Any]], window: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The newest load prediction, the older kept ones where they add hours, against the station
    power the realtime window recorded for those hours; the error (MAE, kW) over the hours
    that have both. Hours the windows have not recorded yet are gaps in "actual"."""
    if not outputs:
        return None
    predicted: dict[int, float] = {}
    for out in reversed(list(outputs)):  # oldest first: newer predictions overwrite
        vals = (out.get("payload") or {}).get("prediction") or []
        for t, v in zip(prediction_hours(out), vals, strict=False):
            if _num(v) is not None:
                predicted[t] = float(v)
    actual: dict[int, float] = {}
    for h, item in (window or {}).items():
        hour, v = hour_epoch(h), _num((item.get("payload") or {}).get("outputPowerPerStationAvg"))
        if hour is not None and v is not None:
            actual[hour] = v
    if not predicted:
        return None
    lo = min(predicted) - 24 * 3600  # a day of history before the forecast for context
    xs = sorted({t for t in predicted} | {t for t in actual if t >= lo})
    both = [t for t in xs if t in predicted and t in actual]
    mae = round(sum(abs(predicted[t] - actual[t]) for t in both) / len(both), 3) if both else None
    return chart("forecast", "Load forecast against actual (kW)", "time", xs, [
        {"label": "actual kW", "unit": "kW", "values": [actual.get(t) for t in xs]},
        {"label": "forecast kW", "unit": "kW", "values": [predicted.get(t) for t in xs]},
    ], error={"mae_kw": mae, "hours_compared": len(both)})


def station_charts(windows: Mapping[str, Any], outputs: Mapping[str, Sequence[Mapping[str, Any]]]
                   ) -> list[dict[str, Any]]:
    """Every chart the station page draws, in page order; windows that are absent draw none."""
    def newest(module: str) -> Mapping[str, Any] | None:
        items = outputs.get(module) or []
        return items[0] if items else None

    made = [
        realtime_curve(windows.get("station_realtime_data")),
        forecast_vs_actual(outputs.get("load_prediction") or [], windows.get("station_realtime_data")),
        pv_curve(windows.get("device_pv"), newest("pv_prediction")),
        storage_bars(windows.get("device_storage")),
        tariff_slots(windows.get("car_price"), newest("electricity_price")),
        orders_per_second(windows.get("car_order")),
    ]
    return [c for c in made if c is not None]
