"""Algorithm callables by dotted path, imported once per process.

A worker resolves every local module's algorithm at start-up (`load_all`), so a typo in the
configuration stops the worker with a message naming the module and the path instead of
failing every run later.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from parsers.catalogue import Catalogue

Algorithm = Callable[[str, Any], Any]

_CACHE: dict[str, Algorithm] = {}


class AlgorithmImportError(ImportError):
    """An algorithm path that does not name an importable callable."""

    def __init__(self, module: str, path: str | None, why: str) -> None:
        super().__init__(f"module {module}: algorithm {path!r} cannot be loaded: {why}")
        self.module = module
        self.path = path


def resolve(path: str, module: str = "?") -> Algorithm:
    """Import "pkg.mod:fn" or "pkg.mod.fn" (cached per process)."""
    fn = _CACHE.get(path)
    if fn is not None:
        return fn
    if not path or not isinstance(path, str):
        raise AlgorithmImportError(module, path, "no algorithm configured")
    if ":" in path:
        mod_name, _, attr = path.partition(":")
    else:
        mod_name, _, attr = path.rpartition(".")
    if not mod_name or not attr:
        raise AlgorithmImportError(module, path, "expected 'package.module:function'")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise AlgorithmImportError(module, path, f"import of {mod_name!r} failed: {e}") from e
    obj: Any = mod
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise AlgorithmImportError(module, path, f"{mod_name!r} has no attribute {attr!r}") from e
    if not callable(obj):
        raise AlgorithmImportError(module, path, f"{attr!r} is not callable")
    _CACHE[path] = obj
    return obj


def is_async(fn: Algorithm) -> bool:
    call = type(fn).__call__ if not inspect.isfunction(fn) and not inspect.ismethod(fn) else None
    return inspect.iscoroutinefunction(fn) or (call is not None and inspect.iscoroutinefunction(call))


def load_all(catalogue: Catalogue, overrides: dict[str, Algorithm] | None = None) -> dict[str, Algorithm]:
    """Every local module's algorithm; `overrides` (module -> callable) win, for tests/bench."""
    out: dict[str, Algorithm] = {}
    for name in catalogue.local_modules():
        if overrides and name in overrides:
            out[name] = overrides[name]
        else:
            out[name] = resolve(catalogue.by_module[name].algorithm or "", name)
    return out


def clear_cache() -> None:
    _CACHE.clear()
