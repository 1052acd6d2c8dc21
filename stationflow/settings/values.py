"""Checking one configuration value against its `Key`, and one flat table against its keys.

Each key type has one validator in `VALIDATORS`: it returns the normalised value or raises
a `ConfigError` naming the key path. A secret's value never appears in an error.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from stationflow.settings.schema import MASK, ConfigError, Key


def type_name(v: Any) -> str:
    """The TOML word for the type of a parsed value (for error messages)."""
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(v), type(v).__name__)


def hint(word: str, choices: list[str]) -> str:
    """"did you mean ...?" for the closest valid key, else the list of valid keys."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "valid keys: " + ", ".join(sorted(choices)) if choices else "no keys allowed here"


def unknown_key(path: str, key: str, valid: list[str]) -> ConfigError:
    full = f"{path}.{key}" if path else key
    return ConfigError(f"{full}: unknown key; {hint(key, valid)}")


#: validator(path, key, value, shown) -> normalised value; `shown` is " <repr>" or "" for secrets
Validator = Callable[[str, Key, Any, str], Any]


def _expected(path: str, what: str, value: Any, shown: str) -> ConfigError:
    return ConfigError(f"{path}: expected {what}, got {type_name(value)}{shown}")


def _object(path: str, key: Key, value: Any, shown: str) -> Any:
    raise ConfigError(f"{path}: takes a Python object and cannot be set from configuration")


def _any(path: str, key: Key, value: Any, shown: str) -> Any:
    if not isinstance(value, (str, int, float, bool)):
        raise _expected(path, "a string, number or boolean", value, shown)
    return value


def _str(path: str, key: Key, value: Any, shown: str) -> Any:
    if not isinstance(value, str):
        raise _expected(path, "a string", value, shown)
    return value


def _int(path: str, key: Key, value: Any, shown: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expected(path, "an integer", value, shown)
    return value


def _float(path: str, key: Key, value: Any, shown: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _expected(path, "a number", value, shown)
    if math.isnan(value):
        raise ConfigError(f"{path}: expected a number, got nan")
    return float(value)


def _bool(path: str, key: Key, value: Any, shown: str) -> Any:
    if not isinstance(value, bool):
        raise _expected(path, "true or false", value, shown)
    return value


def _strlist(path: str, key: Key, value: Any, shown: str) -> Any:
    if key.name == "triggers" and value == "all":
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
        raise _expected(path, "an array of strings", value, shown)
    return list(value)


def _acks(path: str, key: Key, value: Any, shown: str) -> Any:
    if value == "all" or value == -1:
        return "all"
    if isinstance(value, bool) or value not in (0, 1):
        raise _expected(path, "\"all\", 1 or 0", value, shown)
    return value


_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:\d{1,5})?$")


def _servers(path: str, key: Key, value: Any, shown: str) -> str:
    if isinstance(value, str):
        items = [s.strip() for s in value.split(",")]
    elif isinstance(value, (list, tuple)) and all(isinstance(s, str) for s in value):
        items = [s.strip() for s in value]
    else:
        raise ConfigError(f"{path}: expected \"host:port,host:port\" or an array of strings, "
                          f"got {type_name(value)} {value!r}")
    if not items or any(not s for s in items):
        raise ConfigError(f"{path}: empty broker address in {value!r}")
    for s in items:
        if not _HOSTPORT.match(s):
            raise ConfigError(f"{path}: {s!r} is not host[:port]")
    return ",".join(items)


def _api_version(path: str, key: Key, value: Any, shown: str) -> tuple[int, ...]:
    if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+){0,2}", value):
        return tuple(int(x) for x in value.split("."))
    if (isinstance(value, (list, tuple)) and 1 <= len(value) <= 3
            and all(isinstance(x, int) and not isinstance(x, bool) for x in value)):
        return tuple(value)
    raise ConfigError(f"{path}: expected a version such as \"3.0\", got {type_name(value)} {value!r}")


#: one validator per `Key.type`
VALIDATORS: dict[str, Validator] = {
    "object": _object, "any": _any, "str": _str, "int": _int, "float": _float, "bool": _bool,
    "strlist": _strlist, "servers": _servers, "acks": _acks, "api_version": _api_version,
}


def check_value(path: str, key: Key, value: Any) -> Any:
    """Type-check and normalise one value; errors name `path` and never echo a secret."""
    if value is None:
        if key.nullable or key.default is None:
            return None
        raise ConfigError(f"{path}: may not be empty")
    if key.none_word and isinstance(value, str) and value.lower() in ("none", "null"):
        return None
    value = VALIDATORS[key.type](path, key, value, "" if key.secret else f" {value!r}")
    if value is None:
        return None
    if key.choices and value not in key.choices:
        raise ConfigError(
            f"{path}: must be one of {', '.join(map(str, key.choices))}, got {value!r}"
            + _close_suffix(str(value), [str(c) for c in key.choices])
        )
    if key.minimum is not None and isinstance(value, (int, float)) and value < key.minimum:
        raise ConfigError(f"{path}: must be >= {key.minimum:g}, got {value!r}")
    return value


def _close_suffix(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def table(path: str, value: Any) -> dict[str, Any]:
    """`value` as a (copied) dict; ConfigError when it is not a TOML table."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected a table, got {type_name(value)}")
    return dict(value)


def section(path: str, raw: Any, keys: tuple[Key, ...], defaults: bool = True) -> dict[str, Any]:
    """Validate one flat table: unknown keys, types; fill in defaults."""
    raw = table(path, raw)
    by_name = {k.name: k for k in keys}
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in by_name:
            raise unknown_key(path, name, list(by_name))
        out[name] = check_value(f"{path}.{name}" if path else name, by_name[name], value)
    if defaults:
        for k in keys:
            out.setdefault(k.name, copy.copy(k.default))
    return out


_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*([:.][A-Za-z_]\w*)$")


def check_dotted(path: str, value: str | None) -> None:
    """A hook or algorithm path must look like "package.module:function"."""
    if value is not None and not _DOTTED.match(value):
        raise ConfigError(f"{path}: {value!r} is not a dotted path such as \"package.module:function\"")


_URL_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^@/]*)@")


def mask_url(url: str) -> str:
    """The URL with the password of its user-info part replaced by ***."""
    m = _URL_USERINFO.match(url)
    if not m or ":" not in m.group(2):
        return url
    user = m.group(2).split(":", 1)[0]
    return f"{m.group(1)}{user}:{MASK}@{url[m.end():]}"


def masked(keys: tuple[Key, ...], values: Mapping[str, Any], mask: bool) -> dict[str, Any]:
    """`values` with every set secret of `keys` replaced by *** when `mask`."""
    secret = {k.name for k in keys if k.secret}
    return {k: (MASK if mask and k in secret and v is not None else v) for k, v in values.items()}
