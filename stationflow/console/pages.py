"""Each console page's data, as one plain dict (rendered as HTML, and served as JSON).

A page function takes the Redis client and the settings, reads through `reads` (bounded round
trips) and shapes the material with the same summaries `status` and `inspect` use, so the
console and the commands never disagree about a figure.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

from stationflow import inspection
from stationflow import status as st
from stationflow.console import reads
from stationflow.console.charts import station_charts
from store.keys import Keys

#: outputs read per module on the station page (older load predictions fill the forecast chart)
OUTPUTS_KEPT = 24
DEVICE_ALIASES = ("device_host_dcdc", "device_host_acdc", "device_storage")


_stores: dict[tuple[int, str], Any] = {}


def window_store(r: Any, settings: Any) -> Any:
    """One WindowStore per client and prefix: building one loads its scripts (3 round trips)."""
    from store.windows import WindowStore

    key = (id(r), settings.prefix)
    if key not in _stores:
        _stores[key] = WindowStore(r, settings.catalogue, settings.prefix)
    return _stores[key]


def _failed_by_station(r: Any, prefix: str, summaries: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    """station -> failure reason -> runs, over the batches Redis still holds (one round trip)."""
    failed = [b["id"] for b in summaries if b["failed"]]
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for h in reads.batch_details(r, prefix, failed).values():
        for f, v in h.items():
            if f.startswith("e:") and v.startswith("failed"):
                out[f[2:]][v.partition(":")[2] or "failed"] += 1
    return out


def batch_stats(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Batches by state and the time from creation to upload (ms) over the batches held."""
    by_state = Counter(b["state"] for b in summaries)
    waits = sorted(b["finished"] - b["created"] for b in summaries
                   if b["state"] == "uploaded" and b["finished"] is not None and b["created"] is not None)
    return {"held": len(summaries), "by_state": dict(by_state),
            "upload_ms_mean": round(sum(waits) / len(waits), 1) if waits else None,
            "upload_ms_p50": waits[len(waits) // 2] if waits else None,
            "upload_ms_max": waits[-1] if waits else None}


def overview(r: Any, settings: Any, sampler: Any) -> dict[str, Any]:
    """Counters, queue, workers, runs per module, batches and dead letters, plus the sampler's
    rate history and its latest consumer lag."""
    snap = st.gather(r, settings.prefix, settings.queue.name)
    snap.lag, snap.lag_error = sampler.lag()
    runs: dict[str, dict[str, Any]] = dict(st.runs_by_module(snap.counters.get("runs", {})))
    for row in runs.values():
        n = row["ok"] + row["none"] + row["failed"]
        row["mean_ms"] = round(row.get("us", 0) / n / 1000, 3) if n else None
        row["reasons"] = {k[7:]: v for k, v in row.items() if k.startswith("failed:")}
    summaries = reads.batch_summaries(r, settings.prefix, reads.batch_ids(r, settings.prefix))
    topics = {g[6:]: c for g, c in snap.counters.items() if g.startswith("topic:")}
    return {
        "taken_ms": snap.taken_ms,
        "summary": st.summarise(snap),
        "topics": topics,
        "rates": (hist := sampler.history()),
        "charts": rate_charts(hist, {t.topic: t.alias for t in settings.catalogue.topics}),
        "queues": snap.queues,
        "workers": snap.workers,
        "runs": runs,
        "batches": {**st.summarise(snap), "held": batch_stats(summaries)},
        "dead_letters_by_reason": st.dead_letters_by(snap.dlq_counts),
        "dead_letters_by_topic": st.dead_letters_by(snap.dlq_counts, "topic"),
        "dlq_entries": snap.dlq_entries,
        "lag": snap.lag, "lag_error": snap.lag_error,
        "ingest": snap.counters.get("ingest", {}),
        "paused": paused(snap.counters.get("ingest", {})),
    }


def rate_charts(hist: Mapping[str, Any], aliases: Mapping[str, str]) -> list[dict[str, Any]]:
    """The overview's two rate charts (records/s, messages/s), one line per topic, labelled
    with the topic's alias (shorter than its name)."""
    return [{"id": f"{f}_rate", "title": f"{f}/s", "kind": "time", "x": hist["t"],
             "series": [{"label": aliases.get(t, t), "unit": f"{f}/s", "values": v[f]}
                        for t, v in sorted(hist["topics"].items())]}
            for f in ("records", "messages")]


def paused(ingest: Mapping[str, int]) -> bool:
    """Ingestion is paused (backpressure) when more pauses than resumes were counted."""
    return int(ingest.get("pauses", 0)) > int(ingest.get("resumes", 0))


def stations(r: Any, settings: Any, now: int) -> dict[str, Any]:
    """Every station: last seen, stale windows (from the meta hash's ts:<alias>), dead letters
    among the newest DLQ_RECENT entries and failed runs in the batches held."""
    cat = settings.catalogue
    watched = [t for t in cat.input_topics if t.ttl_s is not None and t.kind != "global"]
    seen, newest = reads.stations_table(r, settings.prefix, [t.alias for t in watched])
    dead = Counter(e["station"] for e in reads.recent_dead_letters(r, settings.prefix) if e["station"])
    summaries = reads.batch_summaries(r, settings.prefix, reads.batch_ids(r, settings.prefix))
    failed = _failed_by_station(r, settings.prefix, summaries)
    rows = []
    for station, last in seen:
        ts = newest.get(station, {})
        stale = [t.alias for t in watched if t.alias in ts and now - ts[t.alias] > (t.ttl_s or 0) * 1000]
        rows.append({"station": station, "last_seen_ms": last, "last_seen_age_s": round((now - last) / 1000, 1),
                     "stale": stale, "dead_letters": dead.get(station, 0),
                     "failed_runs": sum(failed.get(station, Counter()).values()),
                     "failed_reasons": dict(failed.get(station, Counter()))})
    return {"stations": rows, "dead_letters_scanned": reads.DLQ_RECENT}


def data_quality(catalogue: Any, topics: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Per module, what its `_data_quality` would say now: inputs missing, stale, and ages."""
    out = {}
    for m in catalogue.modules:
        names = [*m.inputs, *m.deps]
        ages, stale, missing = {}, [], []
        for n in names:
            t = topics.get(n) if n in topics else outputs.get(n)
            if not t or (n in topics and not t.get("present")):
                missing.append(n)
                continue
            ages[n] = t.get("age_s")
            if t.get("stale"):
                stale.append(n)
        out[m.name] = {"age_s": ages, "stale": stale, "missing": missing}
    return out


def station(r: Any, settings: Any, station_id: str, now: int) -> dict[str, Any]:
    """One station: windows summarised (inspect's view), drawn (charts), devices as tables,
    every module's latest output, data quality, its dead letters and batches."""
    cat = settings.catalogue
    raw = inspection.read_station(r, cat, station_id, prefix=settings.prefix, outputs=OUTPUTS_KEPT,
                                    store=window_store(r, settings))
    view = inspection.station_view(cat, raw, now)
    windows = raw["windows"]
    devices = {a: [{"key": k, "age_s": _age(item["ts"], now), "payload": item.get("payload")}
                   for k, item in sorted((windows.get(a) or {}).items())] for a in DEVICE_ALIASES}
    for a in ("device_gun", "device_meter", "device_error"):
        item = windows.get(a)
        devices[a] = [{"key": a, "age_s": _age(item["ts"], now), "payload": item.get("payload")}] if item else []
    latest = {m: {"ts": items[0]["ts"], "age_s": _age(items[0]["ts"], now), "src": items[0].get("src"),
                  "payload": items[0].get("payload"), "kept": len(items)}
              for m, items in raw["outputs"].items() if items}
    dead = [e for e in reads.recent_dead_letters(r, settings.prefix) if e["station"] == station_id]
    return {
        "station": station_id,
        "known": raw["last_seen_ms"] is not None,
        "last_seen_ms": raw["last_seen_ms"],
        "last_seen_age_s": view["last_seen_age_s"],
        "topics": view["topics"],
        "offsets": view["offsets"],
        "charts": station_charts(windows, raw["outputs"]),
        "devices": devices,
        "outputs": latest,
        "data_quality": data_quality(cat, view["topics"], view["outputs"]),
        "dead_letters": [_dead_row(e) for e in dead],
        "batches": reads.station_batches(r, settings.prefix, station_id, limit=50),
    }


def _age(ts: int | None, now: int) -> float | None:
    """Seconds since `ts` (ms), one decimal, as `inspect` shows ages."""
    return None if ts is None else round((now - int(ts)) / 1000, 1)


def _dead_row(e: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in e.items() if k != "raw"} | {"raw_kept": len(e["raw"])}


def batches(r: Any, settings: Any) -> dict[str, Any]:
    """The newest batches held, each with its stations' entries and results."""
    summaries = reads.batch_summaries(r, settings.prefix, reads.batch_ids(r, settings.prefix))
    shown = summaries[:reads.BATCHES_SHOWN]
    full = reads.batch_details(r, settings.prefix, [b["id"] for b in shown])
    for b in shown:
        h = full.get(b["id"], {})
        b["reports"] = {f[2:]: {"entry": v, "result": h.get(f"r:{f[2:]}")} for f, v in sorted(h.items())
                        if f.startswith("e:")}
        b["upload_ms"] = b["finished"] - b["created"] if b["finished"] and b["created"] else None
    return {"stats": batch_stats(summaries), "batches": shown, "held": len(summaries)}


def dead_letters(r: Any, settings: Any, reason: str | None = None) -> dict[str, Any]:
    """Dead letters by reason (all-time counters) and the newest entries (optionally of one reason)."""
    from store.dlq import DeadLetters

    dlq_counts = {f"{t}:{why}": n for (t, why), n in DeadLetters(r, settings.prefix).counts().items()}
    entries = [_dead_row(e) for e in reads.recent_dead_letters(r, settings.prefix, count=200)
               if reason is None or e["reason"] == reason]
    return {"by_reason": st.dead_letters_by(dlq_counts), "by_topic": st.dead_letters_by(dlq_counts, "topic"),
            "reason": reason, "entries": entries}


class ReplayRefused(Exception):
    """A dead letter the console will not replay (gone, cut short, or the send failed)."""


def dead_letter(r: Any, settings: Any, entry_id: str) -> dict[str, Any]:
    """One dead letter with its raw bytes as text and as hex, and how often it was replayed."""
    from stationflow.deadletters import hexdump, preview, replay_counts
    from store.dlq import DeadLetters

    try:
        e = DeadLetters(r, settings.prefix).get(entry_id)
    except Exception as exc:  # noqa: BLE001 - a malformed id is "no such entry", said plainly
        if "Invalid stream ID" not in str(exc):
            raise
        e = None
    if e is None:
        return {"id": entry_id, "entry": None}
    return {"id": entry_id, "entry": _dead_row(e) | {"station": reads.station_of_raw(e["raw"])},
            "text": preview(e["raw"], 20_000), "hex": hexdump(e["raw"], 4096),
            "replayed": replay_counts(r, settings.prefix, [entry_id])[entry_id]}


def replay(r: Any, settings: Any, entry_id: str) -> tuple[int, int]:
    """Send one dead letter back to its topic like `stationflow dlq replay ID`; returns
    (partition, offset) of the copy and counts the replay."""
    from stationflow.deadletters import REPLAYED_GROUP, NotReplayable, replay_value, send
    from store.dlq import DeadLetters

    e = DeadLetters(r, settings.prefix).get(entry_id)
    if e is None:
        raise ReplayRefused(f"no dead letter {entry_id}")
    try:
        value = replay_value(settings.catalogue.by_topic.get(e["topic"]), e)
    except NotReplayable as why:
        raise ReplayRefused(str(why)) from None
    sent = send(settings, [(e, value)], None)
    if not sent:
        raise ReplayRefused(f"sending {entry_id} to {e['topic']} failed (see the console's log)")
    r.hincrby(Keys(settings.prefix).counters(REPLAYED_GROUP), entry_id, 1)
    return sent[0][1], sent[0][2]
