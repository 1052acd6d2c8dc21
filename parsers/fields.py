"""Field types of every input topic (spec §5.2) and the element checks built on them.

One table per alias, so a field's type is stated exactly once. Checks never convert: a
number sent as a string, or a boolean where a number is expected, is a `bad_field_type`.
Absent and `null` both count as missing; only the required fields (the catalogue's
`required_fields`) turn a missing value into an error. Unlisted fields pass through.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from parsers.fees import FEE_CODES, FEE_SLOT_FIELDS

# Type tags: "str", "num", "01" (0|1), "obj", "[str]", "[num]" (null allowed), "[obj]".
STR, NUM, BIT, OBJ, LSTR, LNUM = "str", "num", "0|1", "obj", "[str]", "[num]"

_CAR_PRICE_FEES = {
    f"{cls}{kind}Fee": NUM
    for cls in ("sharp", "peak", "flat", "ebb", "other")
    for kind in ("Electric", "Server")
}

#: alias -> {field: type}; nested objects are listed with dotted paths ("gunPower.gunNo")
FIELD_TYPES: dict[str, dict[str, str]] = {
    "station_param": {
        "stationLng": NUM, "stationLat": NUM, "gunNum": NUM, "gridCapacity": NUM, "meterId": STR,
        "powerNum": NUM, "normalCap": NUM, "hostCode": LSTR, "power": OBJ, "power.powerIds": LSTR,
    },
    "station_realtime_data": {
        "hostCode": STR, "sendTime": STR, "gunPower": OBJ, "gunPower.gunNo": LSTR,
        "gunPower.outputPowerPerGunAvg": LNUM, "gunPower.outputPowerPerGunMax": LNUM,
        "outputPowerPerStationAvg": NUM, "outputPowerPerStationMax": NUM,
    },
    "environment_calendar": {"date": STR, "isHoliday": BIT, "isWeekend": BIT},
    "device_meter": {"meterId": STR, "meterPower": NUM, "rmeterLimitPower": NUM},
    "device_gun": {"hostCode": STR, "gunNo": LSTR, "status": LSTR, "sendTime": STR},
    "car_order": {
        "transactionSerialNo": STR, "hostCode": STR, "gunNo": STR, "terminalMaxOutElectric": NUM,
        "startChargeTime": STR, "endChargeTime": STR, "beginSOC": NUM, "soc": NUM,
        "terminalRequireVoltage": NUM, "terminalRequireElectric": NUM, "outputPower": NUM,
        "carProducerCode": STR, "batteryNominalTotalCapacity": NUM,
    },
    "car_price": {
        "hostCode": STR, "dialNo": STR, "lossRate": NUM, "sendTime": STR, "startTime": STR,
        "endTime": STR, **_CAR_PRICE_FEES, **{f: STR for f in FEE_SLOT_FIELDS},
    },
    "device_error": {
        "hostError": LSTR, "acError": LSTR, "dcError": LSTR, "terminalError": LSTR, "storageError": LSTR,
    },
    "device_host_dcdc": {"hostCode": STR, "dcWorkStatus": LSTR, "dcdcPower": LNUM},
    "device_host_acdc": {"hostCode": STR, "acPower": NUM},
    "device_storage": {
        "hostCode": STR, "storageCode": STR, "batteryGroupSoc": NUM, "batteryGroupSoh": NUM,
        "batteryGroupElectric": NUM, "batteryGroupOutPower": NUM, "maxTemperature": NUM,
        "minTemperature": NUM,
    },
    "device_pv": {"pvId": STR, "pvPreDcPower": LNUM},
    "environment_weather": {
        "weatherSituationYesterday": STR, "seasonTomorrow": STR, "weatherSituationTomorrow": STR,
    },
}

#: fields whose *value* has a format (spec §5.1): checked wherever they appear
_SEND_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})", re.ASCII)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
# no whitespace (any Unicode space) and no C0/C1 control characters
_STATION_ID = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]{1,128}")


class ElementError(Exception):
    """One element failed a check; the caller turns it into a ParseError or a Rejection."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def is_num(v: Any) -> bool:
    """A JSON number; `type() is` on purpose, since bool is a subclass of int."""
    return type(v) is int or type(v) is float


def _is_str(v: Any) -> bool:
    return type(v) is str


def _is_bit(v: Any) -> bool:
    return (type(v) is int and (v == 0 or v == 1)) or type(v) is bool


def _is_obj(v: Any) -> bool:
    return type(v) is dict


def _is_str_list(v: Any) -> bool:
    return type(v) is list and all(type(x) is str for x in v)


def _is_num_list(v: Any) -> bool:
    return type(v) is list and all(x is None or type(x) is int or type(x) is float for x in v)


_CHECKERS = {STR: _is_str, NUM: is_num, BIT: _is_bit, OBJ: _is_obj, LSTR: _is_str_list, LNUM: _is_num_list}


def _compile(types: dict[str, str]) -> dict[str, tuple[str, Any, dict[str, tuple[str, Any]]]]:
    """{field: (tag, checker, {nested field: (tag, checker)})} for one alias's FIELD_TYPES."""
    out: dict[str, tuple[str, Any, dict[str, tuple[str, Any]]]] = {}
    for f, tag in types.items():
        if "." in f:
            head, tail = f.split(".", 1)
            out[head][2][tail] = (tag, _CHECKERS[tag])
        else:
            out[f] = (tag, _CHECKERS[tag], {})
    return out


_COMPILED = {alias: _compile(types) for alias, types in FIELD_TYPES.items()}


def check_station_id(v: Any, field: str = "stationId") -> str:
    if v is None:
        raise ElementError("missing_station_id", f"no {field}")
    if type(v) is not str:
        raise ElementError("bad_station_id", f"{field} must be a string, got {type(v).__name__} {_short(v)}")
    if _STATION_ID.fullmatch(v) is None:
        raise ElementError("bad_station_id", f"{field} {_short(v)} is empty, longer than 128 characters "
                                             "or holds whitespace/control characters")
    return v


@lru_cache(maxsize=8192)
def valid_send_time(s: str) -> bool:
    """`YYYY-MM-DD HH:MM:SS`, a real time of day on a real date."""
    return _valid(_SEND_TIME, datetime, s)


@lru_cache(maxsize=4096)
def valid_date(s: str) -> bool:
    """`YYYY-MM-DD`, a real date."""
    return _valid(_DATE, date, s)


def _valid(pattern: re.Pattern[str], build: Callable[..., Any], s: str) -> bool:
    """`s` matches `pattern` and its integer groups make a valid `build(*groups)`."""
    m = pattern.fullmatch(s)
    if m is None:
        return False
    try:
        build(*(int(g) for g in m.groups()))
    except ValueError:
        return False
    return True


def check_fields(alias: str, obj: dict, required: tuple[str, ...]) -> None:
    """Raise ElementError for the first missing required field, wrong type or bad value.

    A generated all-or-nothing predicate accepts the common (valid) element in one call;
    only an element it refuses goes through the step-by-step checks below, which find the
    first failing rule and word the error. The predicate is never weaker than those checks
    (it tests the same rules, only without reporting), so the outcome is the same.
    """
    if not _fast_check(alias, required)(obj):
        _explain(alias, obj, required)


def _explain(alias: str, obj: dict, required: tuple[str, ...]) -> None:
    """The checks one by one, in their reporting order: raises for the first that fails."""
    for f in required:
        if obj.get(f) is None:
            raise ElementError("missing_field", f"required field {f!r} is missing")
    checks = _COMPILED.get(alias)
    if checks is None:
        return
    for f, v in obj.items():
        c = checks.get(f)
        if c is None or v is None:
            continue
        tag, ok, nested = c
        if not ok(v):
            raise ElementError("bad_field_type", f"field {f!r} must be {tag}, got {_describe(v)}")
        for sub, (sub_tag, sub_ok) in nested.items():
            sv = v.get(sub)
            if sv is not None and not sub_ok(sv):
                raise ElementError("bad_field_type", f"field '{f}.{sub}' must be {sub_tag}, got {_describe(sv)}")
    _check_values(alias, obj)


def _check_values(alias: str, obj: dict) -> None:
    st = obj.get("sendTime")
    if type(st) is str and not valid_send_time(st):
        raise ElementError("bad_field_value", f"sendTime {_short(st)} is not 'YYYY-MM-DD HH:MM:SS'")
    if alias == "environment_calendar":
        d = obj.get("date")
        if not valid_date(d):
            raise ElementError("bad_field_value", f"date {_short(d)} is not 'YYYY-MM-DD'")
    elif alias == "station_realtime_data":
        gp = obj.get("gunPower")
        if gp is not None:
            lens = {k: len(gp[k]) for k in ("gunNo", "outputPowerPerGunAvg", "outputPowerPerGunMax")
                    if gp.get(k) is not None}
            if len(set(lens.values())) > 1:
                raise ElementError("bad_field_value", f"gunPower lists differ in length: {lens}")
    elif alias == "car_price":
        for f in FEE_SLOT_FIELDS:
            code = obj.get(f)
            if code is not None and code not in FEE_CODES:
                raise ElementError("bad_field_value", f"{f} = {_short(code)} is not a fee code 00-04")
    elif alias == "device_host_dcdc":
        s, p = obj.get("dcWorkStatus"), obj.get("dcdcPower")
        if s is not None and p is not None and len(s) != len(p):
            raise ElementError("bad_field_value",
                               f"dcWorkStatus has {len(s)} entries but dcdcPower has {len(p)}")


# ---- the fast predicate ---------------------------------------------------------------------

def _type_test(tag: str, v: str, depth: int) -> list[str]:
    """Source lines returning False from the predicate when `v` (present, not null) is not `tag`."""
    x = f"_x{depth}"
    if tag == STR:
        return [f"if type({v}) is not str: return False"]
    if tag == NUM:
        return [f"if type({v}) is not int and type({v}) is not float: return False"]
    if tag == BIT:
        return [f"if not ((type({v}) is int and ({v} == 0 or {v} == 1)) or type({v}) is bool): return False"]
    if tag == OBJ:
        return [f"if type({v}) is not dict: return False"]
    if tag == LSTR:
        return [f"if type({v}) is not list: return False",
                f"for {x} in {v}:",
                f"    if type({x}) is not str: return False"]
    if tag == LNUM:
        return [f"if type({v}) is not list: return False",
                f"for {x} in {v}:",
                f"    if {x} is not None and type({x}) is not int and type({x}) is not float: return False"]
    raise ValueError(f"unknown field type tag {tag!r}")


def _indent(lines: list[str], n: int = 1) -> list[str]:
    return ["    " * n + ln for ln in lines]


@lru_cache(maxsize=256)
def _fast_check(alias: str, required: tuple[str, ...]) -> Any:
    """A predicate True only when `check_fields(alias, obj, required)` cannot raise: the
    required fields, FIELD_TYPES of `alias` (nested ones included) and `_check_values`,
    written out as straight-line code for this alias."""
    body = ["g = obj.get"]
    for f in required:
        body.append(f"if g({f!r}) is None: return False")
    compiled = _COMPILED.get(alias, {})
    var: dict[str, str] = {}  # field -> the local holding its value
    for i, (f, (tag, _, nested)) in enumerate(compiled.items()):
        v = var[f] = f"v{i}"
        body.append(f"{v} = g({f!r})")
        inner = _type_test(tag, v, 0)
        subs = []
        for j, (sub, (sub_tag, _)) in enumerate(nested.items()):
            sv = f"{v}_{j}"
            subs.append((sub, sv))
            inner.append(f"{sv} = {v}.get({sub!r})")
            inner.append(f"if {sv} is not None:")
            inner.extend(_indent(_type_test(sub_tag, sv, 1)))
        if alias == "station_realtime_data" and f == "gunPower":  # _check_values: equal lengths
            lists = [sv for sub, sv in subs if sub in ("gunNo", "outputPowerPerGunAvg", "outputPowerPerGunMax")]
            inner.append("n = -1")
            for sv in lists:
                inner += [f"if {sv} is not None:",
                          f"    if n == -1: n = len({sv})",
                          f"    elif len({sv}) != n: return False"]
        body.append(f"if {v} is not None:")
        body.extend(_indent(inner))
    # _check_values (the gunPower lengths are checked above)
    body.append(f"st = {var['sendTime']}" if "sendTime" in var else "st = g('sendTime')")
    body.append("if type(st) is str and not valid_send_time(st): return False")
    if alias == "environment_calendar":
        body.append("if not valid_date(g('date')): return False")
    elif alias == "station_realtime_data" and "gunPower" not in var:
        raise ValueError("station_realtime_data: gunPower must be typed in FIELD_TYPES")
    elif alias == "car_price":
        body += ["for f in FEE_SLOT_FIELDS:",
                 "    code = g(f)",
                 "    if code is not None and code not in FEE_CODES: return False"]
    elif alias == "device_host_dcdc":
        body += ["s, p = g('dcWorkStatus'), g('dcdcPower')",
                 "if s is not None and p is not None and len(s) != len(p): return False"]
    body.append("return True")
    src = "def check(obj):\n" + "\n".join(_indent(body)) + "\n"
    env = {"valid_send_time": valid_send_time, "valid_date": valid_date,
           "FEE_SLOT_FIELDS": FEE_SLOT_FIELDS, "FEE_CODES": FEE_CODES}
    exec(compile(src, f"<fields check {alias}>", "exec"), env)  # noqa: S102 - our own source text
    return env["check"]


def _short(v: Any, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def _describe(v: Any) -> str:
    return f"{type(v).__name__} {_short(v)}"
