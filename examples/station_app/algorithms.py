"""The algorithms of the example package: plain functions of (station_id, module_input).

They read the namespaced layout (spec §6.3): inputs under `topics`, upstream outputs under
`deps`, `_data_quality` beside them. They return a dict without `station_id`: stationflow
adds it (and uploads the batch), so nothing here knows about Kafka or Redis.
"""

from __future__ import annotations

import asyncio
from typing import Any

MODEL = "example-v1"
FEE_CLASSES = {"00": "sharp", "01": "peak", "02": "flat", "03": "ebb", "04": "other"}


def forecast_load(station_id: str, module_input: dict[str, Any]) -> dict[str, Any] | None:
    """Next-hour station power: the mean of the last three hours that had data.

    Filled hours (no data received) are skipped rather than read as zero power.
    """
    grid = module_input["topics"]["station_realtime_data"]
    hours = [p for p, filled in zip(grid["outputPowerPerStationAvg"], grid["filled"], strict=True)
             if not filled and p is not None]
    if not hours:
        return None  # nothing to say: no output, the batch just leaves this station out
    recent = hours[-3:]
    return {
        "model": MODEL,
        "next_hour_kw": round(sum(recent) / len(recent), 3),
        "based_on_hours": len(recent),
        "last_hour": grid["sendTime"][-1],
        "guns": len(grid["gunNo"]),
    }


async def price_signal(station_id: str, module_input: dict[str, Any]) -> dict[str, Any]:
    """Half-hour slots per tariff class from the station's newest fee record, and the
    all-in price (electricity + service fee) of its cheapest class.

    `async def` on purpose: algorithms that await I/O (a model server, a feature store) are
    run to completion in the worker with the same timeout and failure rules as plain ones.
    """
    await asyncio.sleep(0)
    records = module_input["topics"]["car_price"] or []
    newest = records[-1] if records else {}
    by_class: dict[str, int] = {}
    for code in newest.get("feeNo") or []:
        name = FEE_CLASSES.get(code, "unknown")
        by_class[name] = by_class.get(name, 0) + 1
    prices = {name: _num(newest.get(f"{name}ElectricFee")) + _num(newest.get(f"{name}ServerFee"))
              for name in by_class if name != "unknown"}
    cheapest = min(prices, key=lambda n: (prices[n], n)) if prices else None
    evaluation = module_input["deps"]["evaluation_model"] or {}
    return {
        "model": MODEL,
        "slots_by_class": by_class,
        "cheapest_class": cheapest,
        "cheapest_price": round(prices[cheapest], 4) if cheapest else None,
        "meter_limit_kw": (module_input["topics"]["device_meter"] or {}).get("rmeterLimitPower"),
        "evaluation_keys": sorted(k for k in evaluation if k != "station_id"),
    }


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0
