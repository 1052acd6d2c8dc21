"""Tariff codes of SCHEDULE-CAR-PRICE (spec §5.2): 48 half-hour slots, each naming a class.

The slot price is the class's electric fee plus its service fee. Kept apart from the parser
so the reference algorithms and the input builder decode slots the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

SLOTS = 48

#: slot k (1-based) covers [(k-1)*30 min, k*30 min) of the station-local day
FEE_SLOT_FIELDS: tuple[str, ...] = tuple(f"feeNo{k}" for k in range(1, SLOTS + 1))

#: code -> class prefix of its fee fields (`ebb` is the valley class)
FEE_CODES: dict[str, str] = {"00": "sharp", "01": "peak", "02": "flat", "03": "ebb", "04": "other"}


def slot_codes(record: Mapping[str, Any]) -> list[str | None]:
    """The 48 slot codes of a fee record, raw (`feeNo1..48`) or normalised (`feeNo` list)."""
    codes = record.get("feeNo")
    if isinstance(codes, list):
        out = [c if isinstance(c, str) else None for c in codes[:SLOTS]]
        return out + [None] * (SLOTS - len(out))
    return [c if isinstance(c := record.get(f), str) else None for f in FEE_SLOT_FIELDS]


def normalise_fee_record(record: dict[str, Any]) -> dict[str, Any]:
    """`feeNo1..feeNo48` replaced by `"feeNo": [48 codes or None]`; every other field kept."""
    out = {k: v for k, v in record.items() if not (k.startswith("feeNo") and k in _SLOT_SET)}
    out["feeNo"] = [record.get(f) for f in FEE_SLOT_FIELDS]
    return out


_SLOT_SET = frozenset(FEE_SLOT_FIELDS)


def class_price(record: Mapping[str, Any], code: str | None) -> float | None:
    """Electric + service fee of one class, or None when the code or a fee is unknown."""
    cls = FEE_CODES.get(code) if code is not None else None
    if cls is None:
        return None
    e, s = record.get(f"{cls}ElectricFee"), record.get(f"{cls}ServerFee")
    if not _num(e) or not _num(s):
        return None
    return float(e) + float(s)


def slot_prices(record: Mapping[str, Any]) -> list[float | None]:
    """The 48 half-hour prices (CNY/kWh) of a fee record; None where a slot cannot be priced."""
    return [class_price(record, c) for c in slot_codes(record)]


def _num(v: Any) -> TypeGuard[int | float]:
    return type(v) is int or type(v) is float
