"""Reference algorithms for the 9 modules: simple, deterministic and documented.

They are not the production models. They exist so that the pipeline produces meaningful,
checkable outputs end to end (and so a deployment works before the real models are wired
in by dotted path). Each takes (station_id, module_input) in the namespaced layout
(spec §6.3) and returns a JSON object; a missing optional input degrades the result, it
never raises. Numbers are rounded to 4 decimals so outputs are stable across platforms.

Conventions used below: powers in kW, energy in kWh, prices in CNY/kWh, 48 half-hour slots
per day (slot k covers [(k-1)*30 min, k*30 min)).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from parsers import fees

SLOTS = fees.SLOTS

#: multiplicative PV yield factor by weather label (first matching word wins)
WEATHER_FACTOR = (
    ("storm", 0.1), ("snow", 0.2), ("heavy", 0.3), ("rain", 0.4), ("overcast", 0.5), ("fog", 0.5),
    ("haze", 0.6), ("cloud", 0.7), ("sunny", 1.0), ("clear", 1.0),
)
#: temperature (°C) above which a component counts as hot
HOT_C = 45.0


# ---- helpers -----------------------------------------------------------------------------------

def _topics(inp: Mapping[str, Any]) -> Mapping[str, Any]:
    t = inp.get("topics") if isinstance(inp, Mapping) else None
    return t if isinstance(t, Mapping) else {}


def _deps(inp: Mapping[str, Any]) -> Mapping[str, Any]:
    d = inp.get("deps") if isinstance(inp, Mapping) else None
    return d if isinstance(d, Mapping) else {}


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _nums(values: Iterable[Any]) -> list[float]:
    return [x for x in (_num(v) for v in values) if x is not None]


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _station_power(rt: Mapping[str, Any] | None) -> list[tuple[str, float | None]]:
    """(sendTime, station average power) per hour of the realtime grid, filled hours as None."""
    if not isinstance(rt, Mapping):
        return []
    hours = rt.get("sendTime") or []
    avg = rt.get("outputPowerPerStationAvg") or []
    filled = rt.get("filled") or [False] * len(hours)
    out = []
    for i, h in enumerate(hours):
        v = _num(avg[i]) if i < len(avg) else None
        out.append((h, None if (i < len(filled) and filled[i]) else v))
    return out


def slot_prices(records: Any) -> list[float | None]:
    """48 half-hour prices of the newest fee record (records are ordered by sendTime); None
    where a slot cannot be priced. The decoding itself is parsers.fees, shared with the inputs."""
    if not isinstance(records, list) or not records or not isinstance(records[-1], Mapping):
        return [None] * SLOTS
    return fees.slot_prices(dict(records[-1]))


def _mapping(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _orders(car_order: Any) -> list[Mapping[str, Any]]:
    if not isinstance(car_order, Mapping):
        return []
    return [o for s in car_order.get("seconds") or [] for o in s.get("orders") or [] if isinstance(o, Mapping)]


# ---- level 0 -----------------------------------------------------------------------------------

def load_prediction(station_id: str, inp: Mapping[str, Any]) -> dict[str, Any]:
    """Next 24 hours of station power: for each hour of day, the mean of the stored hours with
    data at that hour (the last 7 days); holidays are not modelled. Confidence = share of the
    24 hours of day that had at least one observation."""
    series = _station_power(_topics(inp).get("station_realtime_data"))
    by_hour: dict[int, list[float]] = {h: [] for h in range(24)}
    for when, v in series:
        if v is not None and isinstance(when, str) and len(when) >= 13:
            by_hour[int(when[11:13])].append(v)
    last = series[-1][0] if series else None
    start = (int(last[11:13]) + 1) % 24 if isinstance(last, str) and len(last) >= 13 else 0
    prediction = [_r(_mean(by_hour[(start + i) % 24]) or 0.0) for i in range(24)]
    covered = sum(1 for h in by_hour.values() if h)
    return {"prediction": prediction, "start_hour": start, "confidence": round(covered / 24, 4),
            "basis_hours": sum(len(v) for v in by_hour.values())}


def _weather_factor(label: Any) -> float:
    text = label.lower() if isinstance(label, str) else ""
    for word, f in WEATHER_FACTOR:
        if word in text:
            return f
    return 0.8  # unknown label: between cloudy and sunny


def pv_prediction(station_id: str, inp: Mapping[str, Any]) -> dict[str, Any]:
    """The PV array's own DC forecast (pvPreDcPower) scaled by tomorrow's weather factor."""
    t = _topics(inp)
    pv = _mapping(t.get("device_pv"))
    weather = _mapping(t.get("environment_weather"))
    factor = _weather_factor(weather.get("weatherSituationTomorrow"))
    raw = pv.get("pvPreDcPower") or []
    pred = [_r(max(0.0, v * factor)) if (v := _num(x)) is not None else None for x in raw]
    return {"prediction": pred, "weather_factor": factor, "pv_id": pv.get("pvId"),
            "energy_kwh_per_step": _r(sum(p for p in pred if p is not None))}


def evaluation_model(station_id: str, inp: Mapping[str, Any]) -> dict[str, Any]:
    """Utilisation and energy figures: mean/peak station power over the stored hours, energy
    (sum of hourly means), current DC/DC and AC/DC power, storage state, orders seen."""
    t = _topics(inp)
    series = [v for _, v in _station_power(t.get("station_realtime_data")) if v is not None]
    dcdc = t.get("device_host_dcdc") or []
    acdc = t.get("device_host_acdc") or []
    storage = t.get("device_storage") or []
    modules = [s for h in dcdc for s in (h.get("dcWorkStatus") or [])]
    working = sum(1 for s in modules if s == "01")
    orders = _orders(t.get("car_order"))
    return {
        "mean_power_kw": _r(_mean(series)),
        "peak_power_kw": _r(max(series) if series else None),
        "energy_kwh": _r(sum(series)),
        "hours_with_data": len(series),
        "dcdc_power_kw": _r(sum(_nums(p for h in dcdc for p in (h.get("dcdcPower") or [])))),
        "dcdc_utilisation": _r(working / len(modules)) if modules else None,
        "acdc_power_kw": _r(sum(_nums(h.get("acPower") for h in acdc))),
        "storage_soc_mean": _r(_mean(_nums(s.get("batteryGroupSoc") for s in storage))),
        "orders_seen": len(orders),
        "active_transactions": len({o.get("transactionSerialNo") for o in orders}),
        "price_known": bool(t.get("car_price")),
    }


def SOH_model(station_id: str, inp: Mapping[str, Any]) -> dict[str, Any]:  # noqa: N802 (module name)
    """State of health: the reported storage SOH is not an input of this module, so the
    estimate starts at 100 % and loses 2 points per active storage fault and 0.5 per other
    active fault, floored at 0; `load_factor` = mean / max station power over the window."""
    t = _topics(inp)
    err = _mapping(t.get("device_error"))
    storage_faults = len(err.get("storageError") or [])
    other = sum(len(err.get(k) or []) for k in ("hostError", "acError", "dcError", "terminalError"))
    series = [v for _, v in _station_power(t.get("station_realtime_data")) if v is not None]
    peak = max(series) if series else 0.0
    return {"soh_estimate": max(0.0, 100.0 - 2.0 * storage_faults - 0.5 * other),
            "storage_faults": storage_faults, "other_faults": other,
            "load_factor": _r((_mean(series) or 0.0) / peak) if peak > 0 else None}


def customer_mining(station_id: str, inp: Mapping[str, Any]) -> dict[str, Any]:
    """No inputs by default: counts what it was given (orders, makers) when configured with some."""
    orders = _orders(_topics(inp).get("car_order"))
    makers: dict[str, int] = {}
    for o in orders:
        m = o.get("carProducerCode")
        if isinstance(m, str) and m.strip("0"):
            makers[m] = makers.get(m, 0) + 1
    return {"orders": len(orders), "transactions": len({o.get("transactionSerialNo") for o in orders}),
            "makers": dict(sorted(makers.items()))}


# ---- level 1 and 2 -----------------------------------------------------------------------------

def operation_optimization(station_id: str, inp: Mapping[str, Any]) -> dict[str, Any]:
    """A 48-slot storage plan: charge (+1) in the cheapest quarter of the priced slots and
    where PV is forecast, discharge (-1) in the most expensive quarter, else idle (0). Without
    storage the plan is all zeros; without prices only PV drives it."""
    t = _topics(inp)
    prices = slot_prices(t.get("car_price"))
    pv = _deps(inp).get("pv_prediction") or {}
    pv_series = [v if v is not None else 0.0 for v in (pv.get("prediction") or [])]
    has_storage = bool(t.get("device_storage"))
    plan = [0] * SLOTS
    known = sorted((p, k) for k, p in enumerate(prices) if p is not None)
    q = len(known) // 4
    if has_storage and q:
        for _, k in known[:q]:
            plan[k] = 1
        for _, k in known[-q:]:
            plan[k] = -1
    if has_storage and pv_series:
        step = max(1, SLOTS // len(pv_series))
        for i, v in enumerate(pv_series):
            for k in range(i * step, min(SLOTS, (i + 1) * step)):
                if v > 0 and plan[k] == 0:
                    plan[k] = 1
    return {"plan": plan, "has_storage": has_storage, "priced_slots": len(known),
            "pv_used": bool(pv_series)}


def electricity_price(station_id: str, inp: Mapping[str, Any]) -> dict[str, Any]:
    """48-slot cost curve from the fee codes; slots with PV forecast are discounted by the
    PV share (up to 30 %), and the curve is raised 5 % when SOH is below 80 (degraded storage
    cannot shave peaks)."""
    t, d = _topics(inp), _deps(inp)
    prices = slot_prices(t.get("car_price"))
    pv = [v or 0.0 for v in ((d.get("pv_prediction") or {}).get("prediction") or [])]
    soh = _num((d.get("SOH_model") or {}).get("soh_estimate"))
    peak_pv = max(pv) if pv else 0.0
    step = max(1, SLOTS // len(pv)) if pv else SLOTS
    curve: list[float | None] = []
    for k, p in enumerate(prices):
        if p is None:
            curve.append(None)
            continue
        share = (pv[min(len(pv) - 1, k // step)] / peak_pv) if peak_pv > 0 else 0.0
        v = p * (1 - 0.3 * share)
        if soh is not None and soh < 80:
            v *= 1.05
        curve.append(_r(v))
    known = [c for c in curve if c is not None]
    return {"price_curve": curve, "mean_price": _r(_mean(known)),
            "meter_limit_kw": _num((t.get("device_meter") or {}).get("rmeterLimitPower")),
            "soh_adjusted": soh is not None and soh < 80}


def station_guidance(station_id: str, inp: Mapping[str, Any]) -> dict[str, Any]:
    """Recommended guns: the guns seen in delivered orders ranked by lowest output power
    (least loaded first); `busy` when the next-hour load forecast exceeds 80 % of the peak."""
    t, d = _topics(inp), _deps(inp)
    load = (d.get("load_prediction") or {}).get("prediction") or []
    peak = _num((d.get("evaluation_model") or {}).get("peak_power_kw"))
    nxt = _num(load[0]) if load else None
    per_gun: dict[str, float] = {}
    for o in _orders(t.get("car_order")):
        gun = f"{o.get('hostCode')}:{o.get('gunNo')}"
        per_gun[gun] = _num(o.get("outputPower")) or 0.0
    ranked = sorted(per_gun, key=lambda g: (per_gun[g], g))
    return {"recommended_guns": ranked[:3], "next_hour_load_kw": nxt,
            "busy": bool(nxt is not None and peak and nxt > 0.8 * peak)}


def thermal_management(station_id: str, inp: Mapping[str, Any]) -> dict[str, Any]:
    """Thermal risk in [0, 1]: the hottest storage temperature against HOT_C, plus the DC/DC
    load share, plus the forecast load rise and the planned storage activity; level
    low/medium/high at 0.4 and 0.7."""
    t, d = _topics(inp), _deps(inp)
    temps = _nums(s.get("maxTemperature") for s in (t.get("device_storage") or []))
    hottest = max(temps) if temps else None
    temp_risk = min(1.0, max(0.0, (hottest - 25.0) / (HOT_C - 25.0))) if hottest is not None else 0.0
    dc = _nums(p for h in (t.get("device_host_dcdc") or []) for p in (h.get("dcdcPower") or []))
    ac = sum(_nums(h.get("acPower") for h in (t.get("device_host_acdc") or [])))
    load_rise = _load_rise(_nums((d.get("load_prediction") or {}).get("prediction") or []))
    activity = _activity((d.get("operation_optimization") or {}).get("plan") or [])
    dc_share = min(1.0, sum(dc) / ac) if ac > 0 else 0.0
    risk = min(1.0, 0.5 * temp_risk + 0.2 * dc_share + 0.15 * load_rise + 0.15 * activity)
    level = "high" if risk >= 0.7 else "medium" if risk >= 0.4 else "low"
    return {"risk": _r(risk), "level": level, "hottest_storage_c": hottest,
            "dcdc_power_kw": _r(sum(dc)), "acdc_power_kw": _r(ac), "planned_activity": _r(activity)}


def _load_rise(load: list[float]) -> float:
    """How far the next forecast hour is above the forecast mean, as a share of its peak."""
    if not load or max(load) <= 0:
        return 0.0
    return max(0.0, (load[0] - _mean(load)) / max(load))  # type: ignore[operator]


def _activity(plan: list[Any]) -> float:
    """The share of planned slots with storage activity."""
    return sum(1 for p in plan if p) / len(plan) if plan else 0.0
