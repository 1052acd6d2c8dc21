"""One Kafka value -> per-station records (spec §3, §6.2, §6.7).

Each topic has exactly one envelope (the catalogue says which); nothing is auto-detected.
Whole-message failures raise ParseError; in a multi-element message a bad element becomes a
Rejection carrying its index and raw JSON, and the other elements still produce records.
Records are already shaped for their window: one per (station, hour) for `hourly` with the
items of one hour merged, one per station for `latest` (last element wins; car_price keeps
the station's whole list), one per date for `global`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import orjson

from parsers.catalogue import TopicSpec, default_catalogue
from parsers.decode import DEFAULT_MAX_DEPTH, decode_value
from parsers.fields import ElementError, check_fields, check_station_id, valid_date, valid_send_time
from parsers.records import ParseError, ParseResult, Record, Rejection
from parsers.windows import hour_of, merge_hour_items

#: `latest` topics whose window element is the list of all of a station's records of one
#: message (spec §2.1 #7), rather than the last record
GROUPED_LATEST = frozenset({"car_price"})

#: the dead-letter reason of an unexpected exception inside a parser (a bug, not bad input)
INTERNAL_ERROR = "internal_error"

_Checked = tuple[str | None, str | None, dict]  # (station_id, key, element)


def parse_message(spec: TopicSpec, value: bytes | None, *, max_depth: int = DEFAULT_MAX_DEPTH) -> ParseResult:
    """Decode, check the envelope and every element, and fan out to records.

    Only ParseError leaves this function, so one strange message can never stop a partition.
    Anything unexpected is a parser bug, not bad input: it becomes `internal_error` (never one
    of the spec's input reasons, so tests and alerts can tell the two apart), with the original
    exception chained as `__cause__` for the caller to log.
    """
    try:
        obj = decode_value(value, spec, max_depth)
        return _ENVELOPES[spec.envelope](spec, obj)
    except ParseError:
        raise
    except Exception as e:  # a parser bug must dead-letter visibly, not crash the ingester
        raise _internal_error(spec, e) from e


def parse_value(spec: TopicSpec, obj: Any) -> ParseResult:
    """The envelope and element stage alone, for values that are already decoded JSON."""
    try:
        return _ENVELOPES[spec.envelope](spec, obj)
    except ParseError:
        raise
    except Exception as e:
        raise _internal_error(spec, e) from e


def _internal_error(spec: TopicSpec, e: Exception) -> ParseError:
    return ParseError(INTERNAL_ERROR, f"{spec.topic}: parser bug: {type(e).__name__}: {e}")


# ---- envelopes ------------------------------------------------------------------------------

def _single(spec: TopicSpec, obj: Any) -> ParseResult:
    if type(obj) is not dict:
        raise ParseError("bad_envelope", f"{spec.topic}: expected a JSON object, got {_json_type(obj)}")
    if not obj:
        raise ParseError("bad_envelope", f"{spec.topic}: empty object")
    if "stationId" not in obj:
        foreign = [k for k in obj if k in _wrapper_keys() and type(obj[k]) is list]
        if foreign:
            raise ParseError("bad_envelope", f"{spec.topic}: another topic's wrapper {foreign[0]!r}")
    try:
        sid, key, el = _check(spec, obj)
    except ElementError as e:
        raise ParseError(e.reason, f"{spec.topic}{_sid_of(obj)}: {e.detail}") from None
    return ParseResult([Record(sid, spec.alias, spec.kind, key, el, None)], [])


def _station_array(spec: TopicSpec, obj: Any) -> ParseResult:
    if type(obj) is dict:
        return _single(spec, obj)
    if type(obj) is not list:
        raise ParseError("bad_envelope",
                         f"{spec.topic}: expected a JSON array of station objects, got {_json_type(obj)}")
    return _fan_out(spec, obj)


def _wrapper(spec: TopicSpec, obj: Any) -> ParseResult:
    key = spec.wrapper_key
    if type(obj) is not dict:
        raise ParseError("bad_envelope", f"{spec.topic}: expected a {{{key!r}: [...]}} object, got {_json_type(obj)}")
    if key not in obj:
        found = ", ".join(repr(k) for k in list(obj)[:5]) or "no keys"
        raise ParseError("bad_envelope", f"{spec.topic}: wrapper key {key!r} missing (found {found})")
    elements = obj[key]
    if type(elements) is not list:
        raise ParseError("bad_envelope", f"{spec.topic}: {key!r} must be a list, got {_json_type(elements)}")
    if spec.is_module_output:
        module = obj.get("module")
        if type(module) is str and spec.module and module.lower() != spec.module.lower():
            raise ParseError("bad_envelope", f"{spec.topic}: envelope of module {module!r}, expected {spec.module!r}")
    return _fan_out(spec, elements)


_ENVELOPES: dict[str, Callable[[TopicSpec, Any], ParseResult]] = {
    "single": _single,
    "station_array": _station_array,
    "wrapper": _wrapper,
    "global_wrapper": _wrapper,
    "module_output": _wrapper,
}


# ---- elements -------------------------------------------------------------------------------

def _check(spec: TopicSpec, el: Any) -> _Checked:
    """Element checks of spec §6.7; returns (station id, window key, element)."""
    if type(el) is not dict:
        raise ElementError("bad_field_value", f"element is {_json_type(el)}, not an object")
    if spec.is_global:
        sid = None
    elif spec.is_module_output:
        sid = check_station_id(el.get("station_id"), "station_id")
    else:
        sid = check_station_id(el.get("stationId"))
    check_fields(spec.alias, el, spec.required_fields)
    return sid, _key(spec, el), el


def _key(spec: TopicSpec, el: dict) -> str | None:
    kind, field = spec.kind, spec.key_field
    if kind not in ("hourly", "devices", "global") or field is None:
        return None
    v = el.get(field)
    if v is None:
        raise ElementError("missing_field", f"key field {field!r} is missing")
    if type(v) is not str:
        raise ElementError("bad_field_type", f"key field {field!r} must be str, got {_json_type(v)}")
    if kind == "hourly":
        if not valid_send_time(v):
            raise ElementError("bad_field_value", f"{field} {v!r} is not 'YYYY-MM-DD HH:MM:SS'")
        return hour_of(v)
    if v == "":
        raise ElementError("bad_field_value", f"key field {field!r} is empty")
    if kind == "global" and field == "date" and not valid_date(v):
        raise ElementError("bad_field_value", f"date {v!r} is not 'YYYY-MM-DD'")
    return v


def _fan_out(spec: TopicSpec, elements: list) -> ParseResult:
    good: list[tuple[int, str | None, str | None, dict]] = []
    rejections: list[Rejection] = []
    for i, el in enumerate(elements):
        try:
            sid, key, el = _check(spec, el)
        except ElementError as e:
            detail = f"{spec.topic} element {i}{_sid_of(el)}: {e.detail}"
            rejections.append(Rejection(e.reason, detail[:500], i, _raw(el)))
            continue
        good.append((i, sid, key, el))
    return ParseResult(_group(spec, good), rejections)


def _group(spec: TopicSpec, good: list[tuple[int, str | None, str | None, dict]]) -> list[Record]:
    alias, op = spec.alias, spec.kind
    if op == "hourly":
        # station (first-seen order) -> hour -> [(index, element)]
        hours: dict[str | None, dict[str, list[tuple[int, dict]]]] = {}
        for i, sid, key, el in good:
            hours.setdefault(sid, {}).setdefault(key, []).append((i, el))  # type: ignore[arg-type]
        out = []
        for sid, by_hour in hours.items():
            for hour in sorted(by_hour):
                items = by_hour[hour]
                payload = merge_hour_items([el for _, el in items])
                out.append(Record(sid, alias, op, hour, payload, items[0][0]))
        return out
    if op == "latest" and alias in GROUPED_LATEST:
        groups: dict[str | None, list[tuple[int, dict]]] = {}
        for i, sid, _, el in good:
            groups.setdefault(sid, []).append((i, el))
        return [
            Record(sid, alias, op, None, [el for _, el in sorted(items, key=_send_time_order)], items[0][0])
            for sid, items in groups.items()
        ]
    if op in ("latest", "devices", "global"):
        # one record per window slot; the last element in message order wins
        last: dict[tuple[str | None, str | None], tuple[int, dict]] = {}
        for i, sid, key, el in good:
            last.pop((sid, key), None)  # re-insert so the order follows the winning element
            last[(sid, key)] = (i, el)
        recs = [Record(sid, alias, op, key, el, i) for (sid, key), (i, el) in last.items()]
        if op == "global":
            recs.sort(key=lambda r: r.key or "")
        return recs
    # append / orders: every element is its own record, in message order
    return [Record(sid, alias, op, key, el, i) for i, sid, key, el in good]


def _send_time_order(item: tuple[int, dict]) -> tuple[str, int]:
    st = item[1].get("sendTime")
    return (st if type(st) is str else "", item[0])


# ---- helpers --------------------------------------------------------------------------------

@cache
def _wrapper_keys() -> frozenset[str]:
    return frozenset(t.wrapper_key for t in default_catalogue().topics if t.wrapper_key)


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number"}.get(type(v), type(v).__name__)


def _sid_of(el: Any) -> str:
    if type(el) is dict:
        sid = el.get("stationId", el.get("station_id"))
        if sid is not None:
            return f" station {str(sid)[:128]!r}"
    return ""


def _raw(el: Any) -> bytes:
    try:
        return orjson.dumps(el)
    except (TypeError, orjson.JSONEncodeError):
        return repr(el).encode("utf-8", "replace")
