"""Module inputs (spec §6.3): a station's stored windows -> the JSON value an algorithm gets.

Pure: the worker reads the windows (docs/internals.md, "plain window structures") in one
round trip and calls `build_input`. Two layouts: `namespaced` (default; inputs under
`topics`, dependency outputs under `deps`, so nothing can collide) and `flat` (the
reference's merged object for ported algorithms, with every overwrite recorded).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from parsers.catalogue import Catalogue, TopicSpec
from parsers.envelopes import GROUPED_LATEST
from parsers.fees import normalise_fee_record
from parsers.fields import FIELD_TYPES
from parsers.windows import hour_index, hour_key, visible_devices

RESERVED_FLAT_KEYS = ("stationId", "_data_quality")


@dataclass(frozen=True, slots=True)
class View:
    """One input as the algorithm sees it, plus what `_data_quality` needs to know about it."""

    value: Any
    present: bool
    ts_ms: int | None  # record timestamp of the newest data in it
    ttl_s: float | None


def build_input(catalogue: Catalogue, module: str, station_id: str, windows: Mapping[str, Any],
                now_ms: int, shared: dict[str, Any] | None = None) -> dict[str, Any]:
    """The input of `module` for `station_id` from `windows` (alias / dep name -> window).

    `shared`: a dict kept across the modules of one station job, so the costly hourly grid
    (168 hours of per-gun rows) is built once per window and each module gets its own copy.
    """
    spec = catalogue.module(module)
    views: dict[str, View] = {}
    for alias in spec.inputs:
        topic = catalogue.by_alias[alias]
        window = windows.get(alias)
        if shared is not None and topic.kind in _KEPT_KINDS and window:
            views[alias] = _shared_view(topic, window, now_ms, shared)
        else:
            views[alias] = topic_view(topic, window, now_ms)
    for dep in spec.deps:
        views[dep] = output_view(catalogue.by_alias[dep], windows.get(dep))
    quality = data_quality(views, spec.all_inputs, now_ms)
    if spec.layout == "flat":
        return _flat(catalogue, spec.inputs, spec.deps, station_id, views, quality)
    return {
        "stationId": station_id,
        "module": module,
        "topics": {a: views[a].value for a in spec.inputs},
        "deps": {d: views[d].value for d in spec.deps},
        "_data_quality": quality,
    }


# ---- one input ------------------------------------------------------------------------------

def topic_view(topic: TopicSpec, window: Any, now_ms: int) -> View:
    """The parsed value of one input topic's window (spec §6.3 table)."""
    view = _VIEWS.get(topic.kind)
    if view is None:
        raise ValueError(f"topic {topic.topic}: unknown window kind {topic.kind!r}")
    return view(topic, window, now_ms)


def _latest_view(topic: TopicSpec, window: Any, now_ms: int) -> View:
    if not window:
        return View(None, False, None, topic.ttl_s)
    payload = window["payload"]
    if topic.alias in GROUPED_LATEST:
        payload = price_records(payload)
    return View(payload, True, window["ts"], topic.ttl_s)


def _hourly_view(topic: TopicSpec, window: Any, now_ms: int) -> View:
    if not window:
        return View(None, False, None, topic.ttl_s)
    grid = realtime_grid(window, topic.window_size, topic.fill)
    return View(grid, True, max(it["ts"] for it in window.values()), topic.ttl_s)


def _global_view(topic: TopicSpec, window: Any, now_ms: int) -> View:
    if not window:
        return View(None, False, None, topic.ttl_s)
    return View([window[k]["payload"] for k in sorted(window)], True,
                max(it["ts"] for it in window.values()), topic.ttl_s)


def _devices_view(topic: TopicSpec, window: Any, now_ms: int) -> View:
    shown = visible_devices(window, topic.ttl_s, now_ms)
    if not shown:
        return View(None, False, None, topic.ttl_s)
    value = [{**_as_dict(shown[k]["payload"]), "_ts_ms": shown[k]["ts"]} for k in sorted(shown)]
    return View(value, True, max(it["ts"] for it in shown.values()), topic.ttl_s)


def _orders_view(topic: TopicSpec, window: Any, now_ms: int) -> View:
    # None: the station has no closed second stored; []: it has, but none is new for this module
    if window is None:
        return View(None, False, None, topic.ttl_s)
    seconds = [
        {"second": s["second"], "late": bool(s.get("late", False)),
         "orders": [o["payload"] for o in s["orders"]]}
        for s in window
    ]
    ts = max((o["ts"] for s in window for o in s["orders"]), default=None)
    return View({"seconds": seconds}, True, ts, topic.ttl_s)


def _append_view(topic: TopicSpec, window: Any, now_ms: int) -> View:
    if not window:
        return View(None, False, None, topic.ttl_s)
    return View([it["payload"] for it in window], True, max(it["ts"] for it in window), topic.ttl_s)


#: window kind -> its view (one per kind of the catalogue)
_VIEWS: dict[str, Callable[[TopicSpec, Any, int], View]] = {
    "latest": _latest_view, "hourly": _hourly_view, "global": _global_view, "devices": _devices_view,
    "orders": _orders_view, "append": _append_view,
}


def _shared_view(topic: TopicSpec, window: Any, now_ms: int, shared: dict[str, Any]) -> View:
    """The hourly or global view built once per window object, handed out as a copy (down to
    the grid's row lists, or each record of a global window), so a module that changes its
    input in place does not change another module's. A window that carries a `views` dict (a
    worker's memoised window, store.memo: its views are kept for as long as the stored bytes
    do not change) keeps its built view there, so it is built once per window content rather
    than once per job. Neither view depends on `now_ms`."""
    hit = shared.get(topic.alias)
    if hit is None or hit[0] is not window:
        kept = getattr(window, "views", None)
        key = (topic.kind, topic.window_size, topic.fill)
        view = kept.get(key) if kept is not None else None
        if view is None:
            view = topic_view(topic, window, now_ms)
            if kept is not None:
                view = View(_frozen(view.value), view.present, view.ts_ms, view.ttl_s)
                kept[key] = view
        hit = (window, view)
        shared[topic.alias] = hit
    v: View = hit[1]
    return View(_KEPT_KINDS[topic.kind](v.value), v.present, v.ts_ms, v.ttl_s)


#: the grid's keys that hold one row (list) per hour; every other key holds one value per hour
GRID_ROW_KEYS = frozenset({"outputPowerPerGunAvg", "outputPowerPerGunMax"})


def copy_grid(grid: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a `realtime_grid` (lists, or the tuples of a `_frozen` one) in lists down
    to its rows (the copies run in C)."""
    out: dict[str, Any] = {}
    for k, val in grid.items():
        if k in GRID_ROW_KEYS:
            out[k] = list(map(list, val))
        elif isinstance(val, (list, tuple)):
            out[k] = list(val)
        else:
            out[k] = val
    return out


def _frozen(value: Any) -> Any:
    """A kept view as the memo holds it for as long as the stored bytes do not change: a grid's
    lists (and rows) as tuples, which hold only numbers, strings and None, so the garbage
    collector stops tracking them and its full passes no longer walk every memoised hour
    (with the lists, those passes cost a group job more than its input builds). Copies
    handed to modules are lists again (`copy_grid`); a global window's records (flat dicts
    of scalars) are left as they are, they are not tracked either."""
    if not isinstance(value, dict):
        return value
    return {k: tuple(map(tuple, v)) if k in GRID_ROW_KEYS else tuple(v) if isinstance(v, list) else v
            for k, v in value.items()}


def output_view(topic: TopicSpec, item: Any) -> View:
    """A dependency: the latest stored output object of that module for the station."""
    if not item:
        return View(None, False, None, topic.ttl_s)
    return View(item["payload"], True, item["ts"], topic.ttl_s)


def price_records(records: Any) -> list[dict[str, Any]]:
    """car_price: the station's records ordered by sendTime, feeNo1..48 folded into `feeNo`."""
    recs = [r for r in (records if isinstance(records, list) else [records]) if isinstance(r, dict)]
    order = sorted(range(len(recs)), key=lambda i: (_str(recs[i].get("sendTime")), i))
    return [normalise_fee_record(recs[i]) for i in order]


def realtime_grid(window: Mapping[str, Any], size: int, fill: float | None) -> dict[str, Any]:
    """The hourly window as an ascending grid of `size` hours ending at the newest stored hour.

    Gaps are filled (`filled` marks them); `gunNo` is the union of guns, first seen oldest hour
    first; every per-gun row and the station-level lists are aligned to the same grid.
    """
    by_index = {_hour_index(k): it["payload"] for k, it in window.items()}
    newest = max(by_index)
    start = newest - size + 1
    guns: dict[str, int] = {}
    # per stored hour: gun -> avg, gun -> max (non-numbers already replaced by `fill`)
    per_hour: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    for i in sorted(i for i in by_index if i >= start):
        gp = _as_dict(_as_dict(by_index[i]).get("gunPower"))
        nos = _list(gp.get("gunNo"))
        avg, mx = _list(gp.get("outputPowerPerGunAvg")), _list(gp.get("outputPowerPerGunMax"))
        n_avg, n_mx = len(avg), len(mx)
        row_avg: dict[str, Any] = {}
        row_max: dict[str, Any] = {}
        for j, g in enumerate(nos):
            if not isinstance(g, str):
                continue
            if g not in guns:
                guns[g] = len(guns)
            a = avg[j] if j < n_avg else None
            x = mx[j] if j < n_mx else None
            row_avg[g] = a if (type(a) is float or type(a) is int) else fill
            row_max[g] = x if (type(x) is float or type(x) is int) else fill
        per_hour[i] = (row_avg, row_max)
    union = list(guns)
    gap = [fill] * len(union)
    send_time, filled, gun_avg, gun_max, st_avg, st_max = [], [], [], [], [], []
    for i in range(start, newest + 1):
        send_time.append(hour_key(i))
        rows = per_hour.get(i)
        if rows is None:
            filled.append(True)
            gun_avg.append(gap.copy())
            gun_max.append(gap.copy())
            st_avg.append(fill)
            st_max.append(fill)
            continue
        payload = _as_dict(by_index[i])
        filled.append(False)
        get_avg, get_max = rows[0].get, rows[1].get
        gun_avg.append([get_avg(g, fill) for g in union])
        gun_max.append([get_max(g, fill) for g in union])
        st_avg.append(_num_or(payload.get("outputPowerPerStationAvg"), fill))
        st_max.append(_num_or(payload.get("outputPowerPerStationMax"), fill))
    return {
        "sendTime": send_time,
        "filled": filled,
        "gunNo": union,
        "outputPowerPerGunAvg": gun_avg,
        "outputPowerPerGunMax": gun_max,
        "outputPowerPerStationAvg": st_avg,
        "outputPowerPerStationMax": st_max,
    }


#: hour keys repeat across jobs (the same 168 hours for every station): parse each once
_hour_index = lru_cache(maxsize=65536)(hour_index)


def copy_records(records: list[Any]) -> list[Any]:
    """A copy of a global window's view down to each record (records are flat objects)."""
    return [dict(r) if type(r) is dict else r for r in records]


#: kinds whose view is built once per window and copied per module, with their copier
_KEPT_KINDS: dict[str, Callable[[Any], Any]] = {"hourly": copy_grid, "global": copy_records}


# ---- data quality ---------------------------------------------------------------------------

def data_quality(views: Mapping[str, View], names: tuple[str, ...], now_ms: int) -> dict[str, Any]:
    """`_data_quality` over inputs and deps alike (spec §6.3)."""
    available = [n for n in names if views[n].present]
    missing = [n for n in names if not views[n].present]
    total = len(names)
    age_s: dict[str, float] = {}
    stale: list[str] = []
    for n in available:
        v = views[n]
        if v.ts_ms is None:
            continue
        age_ms = max(0, now_ms - v.ts_ms)
        age_s[n] = round(age_ms / 1000, 3)
        if v.ttl_s is not None and age_ms > v.ttl_s * 1000:
            stale.append(n)
    return {
        "available_topics": available,
        "missing_topics": missing,
        "total_topics": total,
        "availability_ratio": round(len(available) / total, 3) if total else 1.0,
        "age_s": age_s,
        "stale": stale,
    }


# ---- flat layout ----------------------------------------------------------------------------

def _flat(catalogue: Catalogue, inputs: tuple[str, ...], deps: tuple[str, ...], station_id: str,
          views: Mapping[str, View], quality: dict[str, Any]) -> dict[str, Any]:
    """Reference-compatible merged object: later sources overwrite earlier ones, except the
    reserved keys; every overwrite is listed in `_data_quality.collisions`."""
    out: dict[str, Any] = {"stationId": station_id}
    owner: dict[str, str] = {"stationId": "stationId"}
    collisions: list[dict[str, str]] = []

    def merge(source: str, keys: Mapping[str, Any]) -> None:
        for k, v in keys.items():
            if k in RESERVED_FLAT_KEYS:
                if k in out and out[k] != v:
                    collisions.append({"key": k, "kept_from": owner.get(k, k), "overwritten_from": source})
                continue
            if k in out:
                collisions.append({"key": k, "kept_from": source, "overwritten_from": owner[k]})
            out[k] = v
            owner[k] = source

    for alias in inputs:
        v = views[alias]
        if v.present:
            merge(alias, flat_keys(catalogue.by_alias[alias], v.value))
    for dep in deps:
        v = views[dep]
        if v.present and isinstance(v.value, dict):
            merge(dep, v.value)
    out["_data_quality"] = {**quality, "collisions": collisions}
    return out


def flat_keys(topic: TopicSpec, value: Any) -> dict[str, Any]:
    """The keys one input contributes to the flat layout (spec §6.3, step 2 table): by alias
    where the table names one, else by window kind."""
    alias = topic.alias
    by_alias = _FLAT_BY_ALIAS.get(alias)
    if by_alias is not None:
        return by_alias(alias, value)
    by_kind = _FLAT_BY_KIND.get(topic.kind)
    if by_kind is not None:
        return by_kind(alias, value)
    if topic.kind == "latest" and alias in FIELD_TYPES:
        # meter, gun, error, pv, weather: their own documented fields, top level
        payload = _as_dict(value)
        return {f: payload[f] for f in FIELD_TYPES[alias] if "." not in f and f in payload}
    return {alias: value}


def _flat_global(alias: str, value: Any) -> dict[str, Any]:
    fields = list(FIELD_TYPES.get(alias, {})) or sorted({k for rec in value for k in _as_dict(rec)})
    return {f: [_as_dict(rec).get(f) for rec in value] for f in fields}


def _flat_dcdc(alias: str, value: Any) -> dict[str, Any]:
    return {alias: [
        {"hostCode": d.get("hostCode"), "dcWorkStatus": st, "moduleIndex": i, "dcPower": pw}
        for d in value
        for i, (st, pw) in enumerate(zip(_list(d.get("dcWorkStatus")), _list(d.get("dcdcPower")), strict=False))
    ]}


FlatKeys = Callable[[str, Any], dict[str, Any]]

_FLAT_BY_ALIAS: dict[str, FlatKeys] = {
    "station_param": lambda alias, value: dict(_as_dict(value)),
    "device_host_dcdc": _flat_dcdc,
    "device_host_acdc": lambda alias, value: {
        alias: [{"hostCode": d.get("hostCode"), "acPower": d.get("acPower")} for d in value]},
    **{a: (lambda alias, value: {alias: value[-1] if value else None}) for a in GROUPED_LATEST},
}

_FLAT_BY_KIND: dict[str, FlatKeys] = {
    "hourly": lambda alias, value: {k: v for k, v in value.items() if k != "filled"},
    "global": _flat_global,
    "orders": lambda alias, value: {alias: [o for s in value["seconds"] for o in s["orders"]]},
    "devices": lambda alias, value: {alias: [{k: v for k, v in d.items() if k != "_ts_ms"} for d in value]},
}


# ---- helpers --------------------------------------------------------------------------------

def _as_dict(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list:
    return v if isinstance(v, list) else []


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _num_or(v: Any, fill: float | None) -> Any:
    return v if (type(v) is int or type(v) is float) else fill
