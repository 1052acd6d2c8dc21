"""What the demo reads from Redis while it runs and at the end: progress snapshots, the drain
condition, the per-module table, sample outputs and the failures that are not expected.
"""

from __future__ import annotations

import signal
from typing import Any

from stationflow import inspection
from stationflow import status as st
from stationflow.demo_children import Run

#: failure reasons a demo run may show without anything being wrong: a station whose data
#: has not all arrived yet is `not_ready` (and its dependents `upstream_failed`)
EXPECTED_FAILURES = frozenset({"not_ready", "upstream_failed"})


def heartbeat_runs(r: Any, settings: Any) -> int:
    """Runs the workers' heartbeat ticks scheduled (plain-text counter, see workers/heartbeat.py)."""
    from store.counters import Counters

    return Counters(r, settings.prefix).get("heartbeat").get("runs", 0)


def snapshot(r: Any, settings: Any, bootstrap: str, lag: bool = True, queue_r: Any = None) -> st.Snapshot:
    snap = st.gather(r, settings.prefix, settings.queue.name, workers=False, queue_r=queue_r)
    if lag:
        try:
            snap.lag = st.consumer_lag({**settings.kafka.admin_config(), "bootstrap_servers": bootstrap},
                                       settings.kafka.group_id, [t.topic for t in settings.catalogue.consumed_topics()])
        except Exception as e:  # noqa: BLE001 - progress goes on without lag
            snap.lag_error = str(e)
    return snap


def drained(snap: st.Snapshot, produced: int, r: Any, settings: Any, baseline: int = 0) -> bool:
    """Every message produced by this run ingested (`baseline`: the count before it, for a
    reused Redis), no job queued or running, no batch open, no order second waiting to close."""
    from store.keys import keys_for

    v = st.summarise(snap)
    k = keys_for(r, settings.prefix)
    open_seconds = sum(int(r.zcard(key)) for t in settings.catalogue.topics if t.kind == "orders"
                       for key in k.orders_due_all(t.alias))
    return (v["messages"] - baseline >= produced and v["queued"] == 0 and v["running"] == 0
            and v["batches_open"] == 0 and open_seconds == 0)


def module_table(snap: st.Snapshot, uploads: dict[str, dict[str, int]], settings: Any) -> dict[str, dict[str, Any]]:
    runs = st.runs_by_module(snap.counters.get("runs", {}))
    out = {}
    for m in settings.catalogue.local_modules():
        r = runs.get(m, {"ok": 0, "none": 0, "failed": 0})
        out[m] = {"ok": r["ok"], "none": r["none"], "failed": r["failed"],
                  "failed_reasons": {k[7:]: n for k, n in r.items() if k.startswith("failed:")},
                  "uploaded": uploads.get(m, {}).get("batches", 0),
                  "upload_messages": uploads.get(m, {}).get("messages", 0),
                  "uploaded_results": uploads.get(m, {}).get("results", 0)}
    return out


def samples(r: Any, settings: Any, n: int) -> dict[str, dict[str, Any]]:
    """A few stations' latest outputs, as key figures."""
    from store.windows import WindowStore

    stations = WindowStore(r, settings.catalogue, settings.prefix).stations()[:n]
    out = {}
    for s in stations:
        raw = inspection.read_station(r, settings.catalogue, s, [m for m in settings.catalogue.local_modules()],
                              prefix=settings.prefix)
        out[s] = {m: inspection.key_figures(items[0]["payload"], limit=5)
                  for m, items in raw["outputs"].items() if items}
    return out


def unexpected(table: dict[str, dict[str, Any]], snap: st.Snapshot, run: Run) -> list[str]:
    errs = list(run.errors)
    for m, row in table.items():
        bad = {k: n for k, n in row["failed_reasons"].items() if k not in EXPECTED_FAILURES}
        if bad:
            errs.append(f"module {m}: runs failed with {bad}")
    jobs_failed = st.summarise(snap)["jobs_failed"]
    if jobs_failed:
        errs.append(f"{jobs_failed} RQ job(s) failed (see `rq info` / the failed job registry)")
    for c in run.children:
        for line in c.alarms()[:3]:
            errs.append(f"{c.name} logged: {line.strip()[:200]}")
        if c.exit_code not in (None, 0) and not (c.expected_stop and c.exit_code in (-signal.SIGTERM, -signal.SIGKILL)):
            errs.append(f"{c.name} exited with code {c.exit_code} (log {c.log_path})")
    return errs

