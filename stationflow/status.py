"""The figures behind `stationflow status` and the demo's progress lines (a single station, for
`inspect`, is stationflow/inspection.py).

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
    dlq_streams = [key for _, key in k.dlq_streams()]
    for key in dlq_streams:  # every dead-letter bucket
        pipe.xlen(key)
    for key in counter_keys:  # every bucket of every group, summed below
        pipe.hgetall(key)
    qpipe = pipe if qr is r else qr.pipeline(transaction=False)
    qpipe.llen(q.key)
    for attr in RQ_REGISTRIES.values():
        qpipe.zcard(getattr(q, attr).key)
    replies = pipe.execute()
    n = len(registry) + len(deadlines) + len(dlq_streams)
    qreplies = replies[n + len(counter_keys):] if qr is r else qpipe.execute()
    stations = sum(int(x) for x in replies[:len(registry)])
    due = sum(int(x) for x in replies[len(registry):len(registry) + len(deadlines)])
    dlq_entries = sum(int(x) for x in replies[n - len(dlq_streams):n])
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
