"""The figures behind `stationflow inspect` (and the console's station page): one station's
windows, meta and latest outputs, read in two round trips and made readable.

Only `read_station` touches Redis; the rest is pure (raw material in, summaries and text
out), so the terminal, `--json`, the console and the tests share it. Summaries show key
figures and freshness, never a dump of a window.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from parsers.catalogue import Catalogue, TopicSpec
from parsers.fees import FEE_CODES, slot_codes, slot_prices
from parsers.inputs import price_records
from parsers.windows import visible_devices
from stationflow.status import _s
from store.keys import keys_for


def read_station(r: Any, catalogue: Catalogue, station: str, names: Sequence[str] | None = None,
                 prefix: str = "sf", outputs: int = 1, store: Any = None) -> dict[str, Any]:
    """The raw material of `inspect`: windows by name (store.read_windows), the meta hash, and
    the newest `outputs` outputs of every module, in two round trips. A long-lived caller (the
    console) passes its `store` so the scripts are not loaded again on every read."""
    from store.codec import decode_item
    from store.windows import WindowStore

    store = store or WindowStore(r, catalogue, prefix)
    inputs = [t.alias for t in catalogue.topics if not t.is_module_output]
    modules = [m.name for m in catalogue.modules]
    wanted = list(names) if names else inputs
    windows = store.read_windows(station, [n for n in wanted if n not in modules])
    k = keys_for(r, prefix)
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(k.meta(station))
    pipe.zscore(k.stations_of(station), station)
    # ALIAS narrows the outputs only when it names modules: a topic alias shows them all
    out_names = [m for m in modules if m in names] if names and any(n in modules for n in names) else modules
    for m in out_names:
        pipe.lrange(k.output(station, m), 0, max(1, outputs) - 1)
    replies = pipe.execute()
    meta = {_s(f): _s(v) for f, v in replies[0].items()}
    outs = {m: [decode_item(x) for x in raw] for m, raw in zip(out_names, replies[2:], strict=True)}
    return {"station": station, "last_seen_ms": None if replies[1] is None else int(replies[1]),
            "windows": windows, "meta": meta, "outputs": outs}


def station_view(catalogue: Catalogue, raw: Mapping[str, Any], now: int) -> dict[str, Any]:
    """`read_station`'s material made readable: per alias a short summary plus freshness
    (age of the newest record, stale past the topic's TTL); per module the latest output's
    key figures."""
    windows = raw["windows"]
    aliases: dict[str, Any] = {}
    for name, window in windows.items():
        spec = catalogue.by_alias[name]
        aliases[name] = {"kind": spec.kind, **freshness(spec, window, now), **summarise_window(spec, window, now)}
    outputs = {}
    for module, items in raw["outputs"].items():
        if not items:
            continue
        item = items[0]
        outputs[module] = {"age_s": _age(item["ts"], now), "src": item.get("src"),
                           "figures": key_figures(item.get("payload")), "kept": len(items)}
    return {"station": raw["station"], "last_seen_age_s": _age(raw.get("last_seen_ms"), now),
            "topics": aliases, "outputs": outputs,
            "offsets": {f[4:]: int(v) for f, v in raw["meta"].items() if f.startswith("hwm:")}}


def _age(ts: int | None, now: int) -> float | None:
    return None if ts is None else round((now - int(ts)) / 1000, 1)


def newest_ts(spec: TopicSpec, window: Any) -> int | None:
    if not window:
        return None
    if spec.kind in ("latest",):
        return int(window["ts"])
    if spec.kind == "append":
        return max(int(i["ts"]) for i in window)
    if spec.kind in ("hourly", "devices", "global"):
        return max(int(i["ts"]) for i in window.values())
    if spec.kind == "orders":
        return max((int(o["ts"]) for s in window for o in s["orders"]), default=None)
    return None


def freshness(spec: TopicSpec, window: Any, now: int) -> dict[str, Any]:
    """Presence, age of the newest record and staleness (age beyond the topic's TTL)."""
    ts = newest_ts(spec, window)
    age = _age(ts, now)
    stale = bool(age is not None and spec.ttl_s is not None and age > spec.ttl_s)
    return {"present": ts is not None, "age_s": age, "ttl_s": spec.ttl_s, "stale": stale}


def summarise_window(spec: TopicSpec, window: Any, now: int) -> dict[str, Any]:
    """A few readable figures per window kind, never a dump."""
    if not window:
        return {}
    kind = spec.kind
    if kind == "hourly":
        hours = sorted(window)
        per_day: dict[str, int] = defaultdict(int)
        for h in hours:
            per_day[h[:10]] += 1
        return {"hours": len(hours), "first_hour": hours[0], "last_hour": hours[-1],
                "hours_per_day": dict(per_day), "last": key_figures(window[hours[-1]]["payload"])}
    if kind == "devices":
        shown = visible_devices(window, spec.ttl_s, now)
        return {"devices": {k: {"age_s": _age(window[k]["ts"], now), "visible": k in shown,
                                "figures": key_figures(window[k]["payload"], limit=4)}
                            for k in sorted(window)}}
    if kind == "global":
        keys = sorted(window)
        return {"entries": len(keys), "first": keys[0], "last": keys[-1]}
    if kind == "orders":
        orders = [o["payload"] for s in window for o in s["orders"]]
        last_orders = {}
        for o in orders:  # the newest snapshot per charging session
            if isinstance(o, dict):
                last_orders[o.get("transactionSerialNo")] = o
        return {"closed_seconds": len(window), "first_seq": window[0]["seq"], "last_seq": window[-1]["seq"],
                "late_seconds": sum(1 for s in window if s.get("late")), "orders": len(orders),
                "last_orders": [order_figures(o) for o in list(last_orders.values())[-5:]]}
    if kind == "append":
        return {"items": len(window), "last": key_figures(window[-1]["payload"])}
    if spec.alias == "car_price":
        return {"records": [price_figures(rec) for rec in price_records(window["payload"])]}
    return {"src": window.get("src"), "figures": key_figures(window["payload"])}


def order_figures(o: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("transactionSerialNo", "hostCode", "gunNo", "soc", "outputPower", "startChargeTime", "endChargeTime")
    return {k: o[k] for k in keep if k in o}


def price_figures(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A tariff record as its 48 half-hour slots collapsed into runs of one class."""
    codes = slot_codes(rec)
    prices = [None if p is None else round(p, 4) for p in slot_prices(rec)]
    runs: list[dict[str, Any]] = []
    for i, (c, p) in enumerate(zip(codes, prices, strict=True)):
        if runs and runs[-1]["code"] == c:
            runs[-1]["to"] = _slot_time(i + 1)
        else:
            runs.append({"from": _slot_time(i), "to": _slot_time(i + 1), "code": c,
                         "class": FEE_CODES.get(c or "", "?"), "price": p})
    known = [p for p in prices if p is not None]
    return {"sendTime": rec.get("sendTime"), "startTime": rec.get("startTime"), "endTime": rec.get("endTime"),
            "min_price": min(known) if known else None, "max_price": max(known) if known else None,
            "slots": [f"{x['from']}-{x['to']} {x['class']} {x['price']}" for x in runs]}


def _slot_time(i: int) -> str:
    return f"{i // 2:02d}:{30 * (i % 2):02d}"


def key_figures(payload: Any, limit: int = 8) -> Any:
    """The scalars of an object and the shape of its lists: enough to recognise it."""
    if not isinstance(payload, Mapping):
        return _short(payload)
    out: dict[str, Any] = {}
    for k, v in payload.items():
        if len(out) >= limit:
            out["…"] = f"{len(payload) - limit} more keys"
            break
        out[k] = _short(v)
    return out


def _short(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 3)
    if isinstance(v, str) and len(v) > 40:
        return v[:37] + "..."
    if isinstance(v, list):
        nums = [x for x in v if isinstance(x, (int, float)) and not isinstance(x, bool)]
        if len(nums) == len(v) and v:
            return f"[{len(v)} numbers, {min(nums):.3g}..{max(nums):.3g}]"
        if len(v) <= 3 and all(not isinstance(x, (list, dict)) for x in v):
            return v
        return f"[{len(v)} items]"
    if isinstance(v, Mapping):
        return f"{{{len(v)} keys}}"
    return v


def render_station(view: Mapping[str, Any]) -> str:
    """The text of `stationflow inspect STATION`: one block per topic, then the outputs."""
    import json

    def compact(v: Any) -> str:
        return json.dumps(v, ensure_ascii=False, separators=(", ", ": "), default=str)

    seen = view.get("last_seen_age_s")
    lines = [f"station {view['station']}" + ("" if seen is None else f" (last seen {seen} s ago)")]
    own = [t for t in view["topics"].values() if t["kind"] != "global"]
    if seen is None and not any(t["present"] for t in own) and not view["outputs"]:
        lines.append("  nothing stored for this station (check the id: `stationflow status` counts stations)")
    lines.append("topics:")
    for alias, t in view["topics"].items():
        if not t["present"]:
            lines.append(f"  {alias:<22} {t['kind']:<8} absent")
            continue
        state = "STALE" if t["stale"] else "fresh"
        lines.append(f"  {alias:<22} {t['kind']:<8} {_age_text(t['age_s'])} (ttl {human_duration(t['ttl_s'])}) {state}")
        for k, v in t.items():
            if k in ("kind", "present", "age_s", "ttl_s", "stale"):
                continue
            if k == "devices":
                for dev, d in v.items():
                    vis = "" if d["visible"] else "  (hidden: older than the ttl)"
                    lines.append(f"      {dev}: {_age_text(d['age_s'])} {compact(d['figures'])}{vis}")
            elif k in ("records", "last_orders"):
                lines.append(f"      {k}:")
                lines.extend(f"        {compact(x)}" for x in v)
            else:
                lines.append(f"      {k}: {compact(v)}")
    lines.append("outputs (latest per module):")
    if not view["outputs"]:
        lines.append("  none yet")
    for module, o in view["outputs"].items():
        lines.append(f"  {module:<22} {_age_text(o['age_s'])} from {o['src']}: {compact(o['figures'])}")
    return "\n".join(lines)


def _age_text(age_s: float | None) -> str:
    """A record stamped ahead of this clock (sped-up test traffic, clock skew) says so."""
    if age_s is None:
        return "age ?"
    return f"age {age_s}s" if age_s >= 0 else f"{-age_s}s ahead of this clock"


_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60))


def human_duration(seconds: float | None) -> str:
    """'none', or the largest whole unit: 7200 -> '2h', 900 -> '15m', 60 -> '60s'."""
    if seconds is None:
        return "none"
    for unit, size in _UNITS:
        if seconds >= max(size, 120) and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def render_keys(rows: Sequence[tuple[str, str, str, str]], cli: str = "redis-cli") -> str:
    """`inspect --keys`: the key schema with one example each, run as `cli` (e.g.
    `redis-cli -u URL`)."""
    lines = []
    for pattern, kind, meaning, example in rows:
        lines += [f"{pattern}  ({kind})", f"    {meaning}", f"    {cli} {example}", ""]
    return "\n".join(lines).rstrip()
