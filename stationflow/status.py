"""The figures behind `stationflow status`, `inspect` and the demo's progress lines.

Gathering is a few pipelined reads (Redis) plus two admin requests (Kafka lag); everything
else here is pure: snapshots in, numbers and text out, so the same summaries serve the
terminal, `--json` and the tests. All totals come from the Redis counters
(`<prefix>:counters:*`), which every ingester and worker writes, so they are cluster-wide
and survive restarts (unlike the per-process Prometheus metrics).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from parsers.catalogue import Catalogue, TopicSpec
from parsers.fees import FEE_CODES, slot_codes, slot_prices
from parsers.inputs import price_records
from parsers.windows import visible_devices
from store.keys import keys_for

#: the RQ registries shown per queue, by the attribute of rq.Queue that holds each
RQ_REGISTRIES = {"started": "started_job_registry", "failed": "failed_job_registry",
                 "deferred": "deferred_job_registry", "scheduled": "scheduled_job_registry",
                 "finished": "finished_job_registry"}


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def now_ms() -> int:
    return int(time.time() * 1000)


# ---- snapshot ---------------------------------------------------------------------------------

@dataclass
class Snapshot:
    """Everything `status` shows, taken at `taken_ms`."""

    taken_ms: int
    stations: int
    counters: dict[str, dict[str, int]]  # group -> field -> total
    dlq_entries: int  # entries in the (capped) stream now
    dlq_counts: dict[str, int]  # "<topic>:<reason>" -> entries ever added
    queues: dict[str, dict[str, int]]  # queue -> {"queued", "started", "failed", ...}
    workers: list[dict[str, Any]] = field(default_factory=list)
    batches_open: int = 0  # open or uploading (the due index)
    lag: dict[str, dict[int, dict[str, int | None]]] | None = None  # topic -> partition -> committed/end/lag
    lag_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = summarise(self)
        if self.lag is not None:  # JSON keys are strings
            d["lag"] = {t: {str(p): v for p, v in ps.items()} for t, ps in self.lag.items()}
        return d


def gather(r: Any, prefix: str = "sf", queue: str = "stationflow", *, workers: bool = True,
           queue_r: Any = None) -> Snapshot:
    """Read the Redis side of a snapshot: two round trips plus one per RQ worker listed
    (queue depths and workers from `queue_r`, the queue Redis, when it is not `r`)."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    k = keys_for(r, prefix)
    counter_keys = [_s(x) for x in r.scan_iter(match=f"{prefix}:counters:*", count=1000)]
    qr = r if queue_r is None else queue_r
    q = Queue(queue, connection=qr, serializer=JSONSerializer)
    pipe = r.pipeline(transaction=False)
    registry, deadlines = k.stations_all(), k.batches_due_all()
    for key in registry + deadlines:  # the buckets of each index (one key on one Redis)
        pipe.zcard(key)
    pipe.xlen(k.dlq)
    for key in counter_keys:  # every bucket of every group, summed below
        pipe.hgetall(key)
    qpipe = pipe if qr is r else qr.pipeline(transaction=False)
    qpipe.llen(q.key)
    for attr in RQ_REGISTRIES.values():
        qpipe.zcard(getattr(q, attr).key)
    replies = pipe.execute()
    n = len(registry) + len(deadlines) + 1
    qreplies = replies[n + len(counter_keys):] if qr is r else qpipe.execute()
    stations = sum(int(x) for x in replies[:len(registry)])
    due = sum(int(x) for x in replies[len(registry):n - 1])
    dlq_entries = int(replies[n - 1])
    queued, regs = int(qreplies[0]), qreplies[1:]
    counters: dict[str, dict[str, int]] = {}
    for key, h in zip(counter_keys, replies[n:n + len(counter_keys)], strict=True):
        group = counters.setdefault(k.counter_group(key), {})
        for f, v in h.items():
            group[_s(f)] = group.get(_s(f), 0) + int(v)
    counters = dict(sorted(counters.items()))
    depth = {"queued": queued, **{name: int(n) for name, n in zip(RQ_REGISTRIES, regs, strict=True)}}
    snap = Snapshot(taken_ms=now_ms(), stations=stations, counters=counters, dlq_entries=dlq_entries,
                    dlq_counts=dict(counters.get("dlq", {})), queues={queue: depth}, batches_open=due)
    if workers:
        snap.workers = list_workers(qr)
    return snap


def list_workers(r: Any) -> list[dict[str, Any]]:
    from rq import Worker

    out = []
    for w in Worker.all(connection=r):
        job = w.get_current_job_id()
        out.append({
            "name": w.name,
            "state": _s(w.get_state() or "?"),
            "queues": [q.name for q in w.queues],
            "current_job": _s(job) if job else None,
            "successful": int(getattr(w, "successful_job_count", 0) or 0),
            "failed": int(getattr(w, "failed_job_count", 0) or 0),
            "pid": getattr(w, "pid", None),
        })
    return sorted(out, key=lambda w: w["name"])


def consumer_lag(admin_config: Mapping[str, Any], group: str, topics: Iterable[str], timeout_s: float = 5.0
                 ) -> dict[str, dict[int, dict[str, int | None]]]:
    """Committed offset, end offset and lag per partition of `topics` for consumer `group`.

    A partition the group never committed shows committed None and its whole log as lag.
    An unreachable broker fails after about `timeout_s` (status must not hang on Kafka)."""
    from kafka import TopicPartition
    from kafka.admin import KafkaAdminClient, OffsetSpec

    ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(**{**admin_config, "client_id": f"{admin_config.get('client_id', 'stationflow')}-status",
                                "bootstrap_timeout_ms": min(ms, int(admin_config.get("bootstrap_timeout_ms", ms))),
                                "request_timeout_ms": min(2 * ms, int(admin_config.get("request_timeout_ms", 2 * ms)))})
    try:
        wanted = set(topics)
        meta = admin.describe_topics(sorted(wanted))
        tps = [TopicPartition(t["name"], p["partition_index"]) for t in meta if not t.get("error_code")
               for p in t.get("partitions") or []]
        ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps}) if tps else {}
        committed = admin.list_group_offsets({group: tps}).get(group, {}) if tps else {}
    finally:
        admin.close()
    return lag_table(tps, {tp: o.offset for tp, o in ends.items()},
                     {tp: o.offset for tp, o in committed.items()})


def lag_table(tps: Sequence[Any], ends: Mapping[Any, int], committed: Mapping[Any, int]
              ) -> dict[str, dict[int, dict[str, int | None]]]:
    """topic -> partition -> {committed, end, lag}; a negative committed offset means none."""
    out: dict[str, dict[int, dict[str, int | None]]] = defaultdict(dict)
    for tp in sorted(tps, key=lambda x: (x.topic, x.partition)):
        end = ends.get(tp)
        c = committed.get(tp)
        c = None if c is None or c < 0 else int(c)
        lag = None if end is None else max(0, int(end) - (c or 0))
        out[tp.topic][tp.partition] = {"committed": c, "end": None if end is None else int(end), "lag": lag}
    return dict(out)


# ---- pure summaries ---------------------------------------------------------------------------

def runs_by_module(runs: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """The `runs` counter group ("<module>:<outcome>" / "<module>:failed:<reason>" / "<module>:us")
    as module -> {ok, none, failed, failed:<reason>..., us}."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"ok": 0, "none": 0, "failed": 0})
    for f, n in runs.items():
        module, _, outcome = f.partition(":")
        row = out[module]
        if outcome.startswith("failed:"):
            row["failed"] += n
        row[outcome] = row.get(outcome, 0) + n
    return {m: dict(v) for m, v in sorted(out.items())}


def dead_letters_by(dlq_counts: Mapping[str, int], part: str = "reason") -> dict[str, int]:
    """Dead-letter totals by reason (or by topic) from the "<topic>:<reason>" counters."""
    out: dict[str, int] = defaultdict(int)
    for f, n in dlq_counts.items():
        topic, _, reason = f.rpartition(":")
        out[reason if part == "reason" else topic] += n
    return dict(sorted(out.items()))


def summarise(s: Snapshot) -> dict[str, Any]:
    """The headline numbers (the demo's progress line, the top of `status`)."""
    ingest = s.counters.get("ingest", {})
    batches = s.counters.get("batches", {})
    runs = runs_by_module(s.counters.get("runs", {}))
    lag_total = None
    if s.lag is not None:
        lag_total = sum(p["lag"] or 0 for ps in s.lag.values() for p in ps.values())
    return {
        "stations": s.stations,
        "messages": ingest.get("messages", 0),
        "records": ingest.get("records", 0),
        "dead_letters": sum(s.dlq_counts.values()),
        "runs_ok": sum(r["ok"] for r in runs.values()),
        "runs_none": sum(r["none"] for r in runs.values()),
        "runs_failed": sum(r["failed"] for r in runs.values()),
        "triggers_fired": ingest.get("triggers_fired", 0),
        "triggers_absorbed": ingest.get("triggers_absorbed", 0),
        "triggers_rate_limited": ingest.get("triggers_rate_limited", 0),
        "runs_deferred": ingest.get("triggers_deferred", 0),
        "runs_released": sum(n for f, n in s.counters.get("triggers", {}).items() if f.endswith(":released")),
        "batches_created": batches.get("created", 0),
        "batches_uploaded": batches.get("uploaded", 0),
        "batches_skipped": batches.get("skipped", 0),
        "batches_expired": batches.get("expired", 0),
        "batches_open": s.batches_open,
        "queued": sum(q.get("queued", 0) for q in s.queues.values()),
        "running": sum(q.get("started", 0) for q in s.queues.values()),
        "jobs_failed": sum(q.get("failed", 0) for q in s.queues.values()),
        "lag": lag_total,
    }


def rates(prev: Snapshot, cur: Snapshot) -> dict[str, float]:
    """Per-second rates between two snapshots of the same store (counters only grow)."""
    dt = max((cur.taken_ms - prev.taken_ms) / 1000, 1e-9)
    a, b = summarise(prev), summarise(cur)
    return {f"{k}_per_s": round((b[k] - a[k]) / dt, 1)
            for k in ("messages", "records", "dead_letters", "runs_ok", "batches_uploaded")}


def progress_line(s: Snapshot, prev: Snapshot | None = None) -> str:
    """One line for the demo: what moved since the start, and how fast."""
    v = summarise(s)
    rate = f" ({rates(prev, s)['records_per_s']:.0f}/s)" if prev is not None else ""
    lag = "?" if v["lag"] is None else v["lag"]
    return (f"records {v['records']}{rate} | runs ok {v['runs_ok']} failed {v['runs_failed']} | "
            f"batches uploaded {v['batches_uploaded']} open {v['batches_open']} | dead letters "
            f"{v['dead_letters']} | queue {v['queued']} running {v['running']} | lag {lag}")


def render(s: Snapshot, prev: Snapshot | None = None) -> str:
    """The text of `stationflow status`."""
    v = summarise(s)
    lines = [f"status at {_clock(s.taken_ms)}: {v['stations']} stations known"]
    ingest = s.counters.get("ingest", {})
    line = f"ingested: {v['messages']} messages, {v['records']} records, {v['dead_letters']} dead letters"
    if prev is not None:
        rt = rates(prev, s)
        line += f"  ({rt['messages_per_s']:.1f} msg/s, {rt['records_per_s']:.1f} records/s)"
    lines.append(line)
    extra = {f: ingest.get(f, 0) for f in ("replays_skipped", "hours_ignored", "late_orders", "seconds_evicted",
                                             "stale_on_arrival", "pauses", "resumes", "store_retries",
                                             "kafka_retries") if ingest.get(f)}
    if extra:
        lines.append("  " + ", ".join(f"{k} {n}" for k, n in extra.items()))
    lines.append(f"triggers: fired {v['triggers_fired']} (deferred by the rate limit {v['runs_deferred']}, "
                 f"released {v['runs_released']}), absorbed by coalescing {v['triggers_absorbed']}, "
                 f"absorbed by the rate limit {v['triggers_rate_limited']}")
    by_reason = dead_letters_by(s.dlq_counts)
    lines.append("dead letters by reason: " + (", ".join(f"{r} {n}" for r, n in by_reason.items()) or "none")
                 + f"  ({s.dlq_entries} in the stream)")
    for name, q in s.queues.items():
        lines.append(f"queue {name}: " + ", ".join(f"{k} {n}" for k, n in q.items()))
    if s.workers:
        lines.append(f"workers: {len(s.workers)}")
        for w in s.workers:
            job = f" on {w['current_job']}" if w["current_job"] else ""
            lines.append(f"  {w['name']}  {w['state']}{job}  ok {w['successful']} failed {w['failed']}")
    else:
        lines.append("workers: none registered")
    lines.append(f"batches: open {v['batches_open']}, created {v['batches_created']}, uploaded "
                 f"{v['batches_uploaded']}, skipped (no ok result) {v['batches_skipped']}, expired "
                 f"{v['batches_expired']}")
    runs = runs_by_module(s.counters.get("runs", {}))
    if runs:
        width = max(len(m) for m in runs)
        lines.append(f"runs:  {'module':<{width}}  {'ok':>7}  {'none':>6}  {'failed':>6}  avg ms")
        for m, r in runs.items():
            n = r["ok"] + r["none"] + r["failed"]
            avg = r.get("us", 0) / n / 1000 if n else 0.0
            reasons = ", ".join(f"{k[7:]} {x}" for k, x in r.items() if k.startswith("failed:"))
            lines.append(f"       {m:<{width}}  {r['ok']:>7}  {r['none']:>6}  {r['failed']:>6}  {avg:6.2f}"
                         + (f"  ({reasons})" if reasons else ""))
    if s.lag_error:
        lines.append(f"consumer lag: unavailable ({s.lag_error})")
    elif s.lag is not None:
        lines.append(f"consumer lag: {v['lag']} in total")
        for topic, parts in s.lag.items():
            cells = ", ".join(f"[{p}] {'-' if x['committed'] is None else x['committed']}/{x['end']}"
                              f" lag {x['lag']}" for p, x in parts.items())
            lines.append(f"  {topic}: {cells}")
    return "\n".join(lines)


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---- a station, decoded (inspect) ----------------------------------------------------------------

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
