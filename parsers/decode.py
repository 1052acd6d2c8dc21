"""Bytes -> JSON value, with the whole-message checks of spec §6.7 in their normative order.

empty_value, too_large, bad_utf8, too_deep, bad_json, non_finite_number. The depth check is
a linear scan done before any decoder runs, so no input can reach a recursive decoder deeper
than `max_depth`. orjson does the real work (strict and fast); the stdlib decoder is only
consulted after orjson refused, to tell NaN/Infinity apart from other bad JSON.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

import orjson

from parsers.catalogue import TopicSpec
from parsers.records import ParseError

DEFAULT_MAX_DEPTH = 32
_BOM = b"\xef\xbb\xbf"

# A complete JSON string (escapes included). Unterminated strings don't match and leave their
# quote behind, which only matters for text that is bad JSON anyway.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# bytes -> only the brackets, then brackets -> signed steps (+1 open, -1 close)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_BRACKETS_QUOTES = bytes(b for b in range(256) if b not in b'[]{}"')
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what msgpack and orjson can carry


def nesting_depth(data: bytes) -> int:
    """Deepest bracket nesting outside JSON strings, in C-speed passes (no recursion)."""
    opens = data.count(b"[") + data.count(b"{")
    if opens == 0:
        return 0
    if b'"' in data:
        if b"\\" in data:
            data = _STRING.sub(b"", data)
        else:
            # without escapes a string runs from one quote to the next, whatever lies between:
            # drop everything but brackets and quotes first, then keep what is outside quotes
            # (an unterminated last string stays, as the regex leaves it)
            parts = data.translate(None, _NOT_BRACKETS_QUOTES).split(b'"')
            outside = parts[0::2]
            if len(parts) % 2 == 0:
                outside.append(parts[-1])
            data = b"".join(outside)
    steps = data.translate(None, _NOT_BRACKETS).translate(_STEPS)
    if not steps:
        return 0
    return max(0, max(accumulate(memoryview(steps).cast("b"))))


class _NonFinite(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFinite(name)


def decode_value(value: bytes | None, spec: TopicSpec, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode one Kafka value for `spec`'s topic or raise ParseError with the first failing reason."""
    if not value:
        raise ParseError("empty_value", f"{spec.topic}: empty value (zero bytes or tombstone)")
    n = len(value)
    if n > spec.max_bytes:
        raise ParseError("too_large", f"{spec.topic}: value of {n} bytes exceeds max_bytes {spec.max_bytes}")
    data = value if type(value) is bytes else bytes(value)
    if data.startswith(_BOM):
        data = data[3:]
    # orjson validates UTF-8 itself, so the explicit check only runs when a later check fails
    # (the reasons must still come out in the normative order)
    if (depth := _depth_over(data, max_depth)) is not None:
        _utf8(data, spec)
        raise ParseError("too_deep", f"{spec.topic}: nesting depth {depth} exceeds max_depth {max_depth}")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    return _fallback(_utf8(data, spec), spec)


def _depth_over(data: bytes, max_depth: int) -> int | None:
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return None  # cannot nest deeper than the number of openers: skip the scan
    depth = nesting_depth(data)
    return depth if depth > max_depth else None


def _utf8(data: bytes, spec: TopicSpec) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ParseError("bad_utf8", f"{spec.topic}: invalid UTF-8 at byte {e.start}: {e.reason}") from None


def _fallback(text: str, spec: TopicSpec) -> Any:
    """orjson refused: find out whether it was NaN/Infinity, an overflow, or plain bad JSON.

    Depth is already bounded, so the recursive stdlib decoder is safe here.
    """
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except _NonFinite as e:
        _non_finite_only(text, spec)
        raise ParseError("non_finite_number", f"{spec.topic}: literal {e} is not a finite JSON number") from None
    except (ValueError, RecursionError) as e:
        raise ParseError("bad_json", f"{spec.topic}: {e}") from None
    # stdlib accepted what orjson did not: overflowing numbers, lone surrogates and the like
    return _sanitise(obj, spec)


def _non_finite_only(text: str, spec: TopicSpec) -> None:
    """A NaN/Infinity literal stopped the decoder: raise bad_json if the text is bad JSON anyway.

    bad_json (reason 5) comes before non_finite_number (6), so text that is truncated or
    otherwise broken after the literal must not be reported by the literal it happens to hold.
    The literals are decoded as null here, and the value gets the same text checks as any other.
    """
    try:
        obj = json.loads(text, parse_constant=lambda _name: None)
    except (ValueError, RecursionError) as e:
        raise ParseError("bad_json", f"{spec.topic}: {e}") from None
    _sanitise(obj, spec)


def _sanitise(obj: Any, spec: TopicSpec) -> Any:
    """Make a stdlib-decoded value as strict as orjson's: finite floats, 64-bit ints, valid text."""
    box = [obj]
    stack: list[Any] = [box]
    non_finite = ""
    while stack:
        cur = stack.pop()
        items = cur.items() if type(cur) is dict else enumerate(cur)
        for k, v in list(items):
            if type(k) is str:
                _check_text(k, spec)
            t = type(v)
            if t is dict or t is list:
                stack.append(v)
            elif t is str:
                _check_text(v, spec)
            elif t is float and not math.isfinite(v):
                non_finite = non_finite or "number out of double range"
            elif t is int and not (_INT_MIN <= v <= _INT_MAX):
                try:
                    cur[k] = float(v)
                except OverflowError:
                    non_finite = non_finite or "integer out of double range"
    if non_finite:  # only after every text was checked: bad_json comes first
        raise ParseError("non_finite_number", f"{spec.topic}: {non_finite}")
    return box[0]


def _check_text(s: str, spec: TopicSpec) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ParseError("bad_json", f"{spec.topic}: string holds an unpaired surrogate escape") from None
