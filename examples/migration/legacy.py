"""A callback as it was written for d_a's AsyncDataAnalysisService (flat module input).

Unchanged from the reference style on purpose, apart from one thing stationflow makes
unnecessary: it no longer puts `station_id` into its result.
"""

from __future__ import annotations


def process_station(station_id, module_input):
    """Load forecast from the per-gun power grid: the newest hour's total and its peak gun."""
    per_gun = module_input.get("outputPowerPerGunAvg") or []
    hours = module_input.get("sendTime") or []
    guns = module_input.get("gunNo") or []
    if not per_gun:
        return None  # d_a: None meant "no result"; stationflow: the same
    last = per_gun[-1]
    total = sum(v for v in last if isinstance(v, (int, float)))
    peak = max(range(len(last)), key=lambda i: last[i] if isinstance(last[i], (int, float)) else -1) \
        if last else None
    return {
        "last_hour": hours[-1] if hours else None,
        "total_gun_power": round(total, 3),
        "peak_gun": guns[peak] if peak is not None and peak < len(guns) else None,
        "grid_capacity": module_input.get("gridCapacity"),
        "holidays_known": sum(1 for h in module_input.get("isHoliday") or [] if h),
    }
