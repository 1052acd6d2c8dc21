"""Unit-test an algorithm with realistic module inputs, without Redis or Kafka.

The inputs are built the way a worker builds them: the sample messages bundled with the
package (`stationflow/samples/`, one valid value per topic) go through the real parser
(`parsers.envelopes.parse_message`), are folded into windows by the pure window rules
(`parsers.windows`), and the module input comes from `parsers.inputs.build_input`. Running an
algorithm applies the worker's own call and result rules (`workers.runs.classify_run`,
`store.tracker.normalise_result`), so what passes here behaves the same in production:

    from stationflow.testing import sample_input, run_algorithm

    def test_my_forecast():
        inp = sample_input("load_prediction")
        assert inp["topics"]["station_realtime_data"]["sendTime"]
        run = run_algorithm(my_forecast, "load_prediction")
        assert run.outcome == "ok" and run.result["station_id"] == run.station_id

Without `station_id`, the input belongs to the sample station holding most of the module's
inputs, and the inputs it lacks are borrowed from the other sample stations (their
`stationId` rewritten), so every input the samples have is present. With `station_id`, only
that station's own data (and the global calendar) is used, which is how missing optional
inputs can be tested. Dependency outputs are computed by the reference algorithms
(`workers.reference`) from the same windows, in dependency order, or given with `deps=`.

Every record is stamped `age_s` seconds before `now_ms` (default: now), so nothing is stale
and devices are visible; pass an older `now_ms`-relative age to test staleness.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from parsers.catalogue import Catalogue, TopicSpec, default_catalogue
from parsers.envelopes import parse_message
from parsers.inputs import build_input
from parsers.readiness import missing_required
from parsers.records import Record
from parsers.windows import (
    OrderBook,
    append,
    apply_latest,
    device_expiry,
    make_item,
    upsert_device,
    upsert_global,
    upsert_hourly,
)

__all__ = [
    "RunResult",
    "run_algorithm",
    "sample_input",
    "sample_messages",
    "sample_records",
    "sample_stations",
    "sample_windows",
]

DEFAULT_AGE_S = 1.0


class SampleError(ValueError):
    """A request the bundled samples cannot answer (unknown station, module or topic)."""


# ---- the bundled samples -------------------------------------------------------------------

@lru_cache(maxsize=1)
def _sample_files() -> tuple[tuple[str, bytes], ...]:
    root = resources.files("stationflow").joinpath("samples")
    out = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json") and entry.is_file():
            out.append((entry.name[: -len(".json")], entry.read_bytes()))
    if not out:
        raise SampleError(f"no sample messages found in {root}")
    return tuple(out)


def sample_messages() -> dict[str, bytes]:
    """Default Kafka topic name -> the raw sample value (as produced to Kafka)."""
    return dict(_sample_files())


def sample_records(catalogue: Catalogue | None = None) -> list[tuple[TopicSpec, list[Record]]]:
    """Every sample parsed by the real parser, with the catalogue's spec of its topic.

    Files are named for the default topic names; a catalogue that renames topics is matched
    by alias, so the helpers work with a deployment's settings too.
    """
    cat = catalogue or default_catalogue()
    base = default_catalogue()
    out = []
    for topic, raw in _sample_files():
        alias = base.topic(topic).alias
        spec = cat.by_alias[alias]
        result = parse_message(spec, raw)
        out.append((spec, result.records))
    return out


def sample_stations(catalogue: Catalogue | None = None) -> list[str]:
    """Station ids that appear in the input-topic samples, sorted."""
    return sorted({r.station_id for spec, recs in sample_records(catalogue) if not spec.is_module_output
                   for r in recs if r.station_id is not None})


# ---- windows ---------------------------------------------------------------------------------

def sample_windows(station_id: str | None = None, *, module: str | None = None,
                   catalogue: Catalogue | None = None, now_ms: int | None = None,
                   age_s: float = DEFAULT_AGE_S) -> tuple[str, dict[str, Any]]:
    """(station id, alias -> window) in the plain structures of docs/internals.md.

    Module outputs are not included (see `sample_input` for dependencies). `module` only
    guides the choice of the station when `station_id` is None.
    """
    cat = catalogue or default_catalogue()
    now = _now(now_ms)
    ts = now - int(age_s * 1000)
    per_station: dict[str, dict[str, Any]] = {}
    global_windows: dict[str, Any] = {}
    offsets: dict[str, int] = {}
    for spec, records in sample_records(cat):
        if spec.is_module_output:
            continue
        for rec in records:
            offset = offsets.get(spec.topic, 0)
            offsets[spec.topic] = offset + 1
            item = make_item(ts, f"{spec.topic}:0:{offset}", rec.payload)
            if rec.station_id is None:
                global_windows[spec.alias] = _fold(spec, global_windows.get(spec.alias), rec, item, now)
            else:
                win = per_station.setdefault(rec.station_id, {})
                win[spec.alias] = _fold(spec, win.get(spec.alias), rec, item, now)
    for win in per_station.values():
        for alias, book in list(win.items()):
            if isinstance(book, OrderBook):
                win[alias] = _closed_seconds(book, now)
    if station_id is not None:
        if station_id not in per_station:
            raise SampleError(f"station {station_id!r} is not in the samples; "
                              f"sample stations: {', '.join(sorted(per_station))}")
        return station_id, {**global_windows, **per_station[station_id]}
    return _composite(cat, per_station, global_windows, module)


def _fold(spec: TopicSpec, cur: Any, rec: Record, item: dict[str, Any], now_ms: int) -> Any:
    """One record into one window, by the window kind's pure rule."""
    kind = spec.kind
    if kind == "latest":
        return apply_latest(cur, item)
    if kind == "append":
        return append(cur or [], item, spec.window_size)
    if kind == "hourly":
        return upsert_hourly(cur or {}, rec.key, item, spec.window_size)[0]  # type: ignore[arg-type]
    if kind == "devices":
        expire = device_expiry(cur, item, spec.ttl_s, now_ms)
        return upsert_device(cur or {}, rec.key, item, spec.window_size, expire)  # type: ignore[arg-type]
    if kind == "global":
        return upsert_global(cur or {}, rec.key, item, spec.window_size)[0]  # type: ignore[arg-type]
    if kind == "orders":
        book = cur if isinstance(cur, OrderBook) else OrderBook(spec.window_size, spec.order_close_s)
        book.add(item, item["ts"])
        return book
    raise SampleError(f"topic {spec.topic}: unknown window kind {kind!r}")


def _closed_seconds(book: OrderBook, now_ms: int) -> list[dict[str, Any]]:
    """The book as a module sees it on a fresh station: every second closed, none delivered."""
    book.close_expired(max(now_ms, (book.open_since_ms or 0) + int(book.order_close_s * 1000)))
    return [c.as_dict() for c in book.closed]


def _composite(cat: Catalogue, per_station: Mapping[str, dict[str, Any]], global_windows: dict[str, Any],
               module: str | None) -> tuple[str, dict[str, Any]]:
    wanted = cat.module(module).inputs if module else tuple(t.alias for t in cat.input_topics)
    stations = sorted(per_station)
    station = max(stations, key=lambda s: (sum(a in per_station[s] for a in wanted), len(per_station[s]),
                                           -stations.index(s)))
    windows = {**global_windows, **per_station[station]}
    for other in stations:
        for alias, win in per_station[other].items():
            if alias not in windows:
                windows[alias] = _restation(win, station)
    return station, windows


def _restation(window: Any, station: str) -> Any:
    """A window borrowed from another sample station, its payloads' stationId rewritten."""
    if isinstance(window, list):
        return [_restation(x, station) for x in window]
    if isinstance(window, dict):
        if "payload" in window and "ts" in window:
            return {**window, "payload": _restation_payload(window["payload"], station)}
        if "orders" in window and "seq" in window:
            return {**window, "orders": [_restation(o, station) for o in window["orders"]]}
        return {k: _restation(v, station) for k, v in window.items()}
    return window


def _restation_payload(payload: Any, station: str) -> Any:
    if isinstance(payload, dict) and "stationId" in payload:
        return {**payload, "stationId": station}
    if isinstance(payload, list):
        return [_restation_payload(p, station) for p in payload]
    return payload


# ---- module inputs ---------------------------------------------------------------------------

def sample_input(module: str, station_id: str | None = None, *, layout: str | None = None,
                 now_ms: int | None = None, deps: Mapping[str, Any] | None = None,
                 catalogue: Catalogue | None = None, settings: Any = None,
                 age_s: float = DEFAULT_AGE_S) -> dict[str, Any]:
    """The module input a worker would build for `module` from the sample messages.

    `layout` ("namespaced" or "flat") overrides the module's configured layout; `deps` maps
    dependency module -> output object (None = absent) and replaces the computed outputs;
    `catalogue` or `settings` (a `stationflow.settings.Settings`) apply a deployment's
    overrides (inputs, optional, layout, topic names ...).
    """
    cat = _catalogue(catalogue, settings, module, layout)
    now = _now(now_ms)
    station, windows = sample_windows(station_id, module=module, catalogue=cat, now_ms=now, age_s=age_s)
    return _build(cat, module, station, windows, now, dict(deps or {}))


def _build(cat: Catalogue, module: str, station: str, windows: dict[str, Any], now_ms: int,
           given: dict[str, Any]) -> dict[str, Any]:
    spec = cat.module(module)
    outputs: dict[str, Any] = {}
    for dep in cat.transitive_deps(module):
        if dep in given:
            value = given[dep]
            if value is not None:  # stored outputs always carry the station's id
                from store.tracker import normalise_result

                value = normalise_result(station, value).value
        else:
            value = _reference_output(cat, dep, station, {**windows, **outputs}, now_ms)
        outputs[dep] = None if value is None else make_item(now_ms, "local", value)
    unknown = set(given) - set(spec.deps) - set(cat.transitive_deps(module))
    if unknown:
        raise SampleError(f"module {module}: deps= names {sorted(unknown)}, which are not its dependencies "
                          f"({', '.join(spec.deps) or 'none'})")
    return build_input(cat, module, station, {**windows, **outputs}, now_ms)


def _reference_output(cat: Catalogue, module: str, station: str, windows: dict[str, Any],
                      now_ms: int) -> Any:
    """What the reference algorithm outputs for `module` (None when it would not be ready)."""
    from store.tracker import normalise_result
    from workers import reference

    spec = cat.module(module)
    ns = dataclasses.replace(spec, layout="namespaced")  # the reference reads the namespaced layout
    ns_cat = _with_module(cat, ns)
    inp = build_input(ns_cat, module, station, windows, now_ms)
    if missing_required(spec, inp["_data_quality"]["available_topics"]):
        return None
    result = getattr(reference, module)(station, inp)
    return None if result is None else normalise_result(station, result).value


# ---- running an algorithm --------------------------------------------------------------------

@dataclass(frozen=True)
class RunResult:
    """One run, classified exactly as a worker classifies it (spec §6.5, §6.6).

    `outcome` is "ok", "none" or "failed"; `reason` (failed only) is one of exception,
    timeout, not_ready, unserialisable; `result` is the normalised output object (station_id
    set, non-finite floats as None), the value that would be stored and uploaded.
    """

    module: str
    station_id: str
    outcome: str
    result: dict[str, Any] | None
    reason: str | None
    error: BaseException | None
    input: dict[str, Any]
    nonfinite: int = 0
    station_id_mismatch: bool = False
    wrapped: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def run_algorithm(fn: Callable[[str, Any], Any], module: str, module_input: Mapping[str, Any] | None = None,
                  *, station_id: str | None = None, timeout_s: float | None = None,
                  **sample_kw: Any) -> RunResult:
    """Run `fn(station_id, module_input)` as a worker would and classify the outcome.

    `module_input` defaults to `sample_input(module, station_id, **sample_kw)`; `timeout_s`
    defaults to the module's `run_timeout_s`. `fn` may be a coroutine function. Exceptions
    of `fn` are captured in the result (outcome failed, reason exception), not raised.
    """
    from workers.runs import classify_run

    cat = _catalogue(sample_kw.pop("catalogue", None), sample_kw.pop("settings", None), module,
                     sample_kw.pop("layout", None))
    spec = cat.module(module)
    if module_input is None:
        module_input = sample_input(module, station_id, catalogue=cat, **sample_kw)
    elif sample_kw:
        raise TypeError(f"sample options {sorted(sample_kw)} only apply when module_input is not given")
    inp = dict(module_input)
    station = station_id or inp.get("stationId")
    if not isinstance(station, str):
        raise SampleError("station_id is required when the module input has no stationId")
    run = classify_run(fn, spec, station, inp, timeout_s=timeout_s)
    error = run.error
    if run.missing:
        error = SampleError(f"module {module} station {station}: required inputs missing: {', '.join(run.missing)}")
    norm = run.result
    if norm is None:
        return RunResult(module, station, run.outcome, None, run.reason, error, inp)
    return RunResult(module, station, "ok", norm.value, None, None, inp, norm.nonfinite, norm.mismatch,
                     norm.wrapped)


# ---- helpers ---------------------------------------------------------------------------------

def _now(now_ms: int | None) -> int:
    return int(time.time() * 1000) if now_ms is None else int(now_ms)


def _catalogue(catalogue: Catalogue | None, settings: Any, module: str, layout: str | None) -> Catalogue:
    cat = catalogue or (settings.catalogue if settings is not None else default_catalogue())
    spec = cat.module(module)  # unknown module: CatalogueError with a suggestion
    if layout is not None and layout != spec.layout:
        cat = _with_module(cat, dataclasses.replace(spec, layout=layout))
    return cat


def _with_module(cat: Catalogue, spec: Any) -> Catalogue:
    if cat.by_module[spec.name] == spec:
        return cat
    return Catalogue(cat.topics, tuple(spec if m.name == spec.name else m for m in cat.modules))
