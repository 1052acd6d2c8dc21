"""What `stationflow demo` prints at the end: the summary, explained, and with `--keep` the
`export` lines that point every other command at the demo's servers.

The summary is read by someone trying the system for the first time, so each figure that
looks like a fault but is not says why: batches expire or are skipped while the stations'
first data is still arriving, results come back fewer than ok runs when runs report after
their batch has left `open`, and sample values are shown whole (wrapped), never cut.
"""

from __future__ import annotations

import json
import shlex
import textwrap
from typing import Any

#: width of the wrapped sample lines
WIDTH = 100


def export_lines(env: dict[str, str]) -> list[str]:
    """`export` lines for the demo's Redis, broker, consumer group and configuration file: with
    them every README command, the examples and `rq worker --url "$STATIONFLOW_REDIS_URL"` talk
    to the demo (and `status` reads the lag of the demo's own group)."""
    names = ("STATIONFLOW_REDIS_URL", "STATIONFLOW_QUEUE_REDIS_URL", "STATIONFLOW_KAFKA", "STATIONFLOW_GROUP_ID",
             "STATIONFLOW_CONFIG")
    return [f"export {n}={shlex.quote(env[n])}" for n in names if env.get(n)]


def batch_notes(b: dict[str, Any]) -> list[str]:
    """Why expired, skipped and late batches are normal in a demo (docs/workers.md, batch tracker)."""
    notes = []
    if b["expired"] or b["skipped"]:
        notes.append("  expired: past their deadline before every run reported (the sweeper uploads what they "
                     "have); skipped: no ok result, nothing to upload (e.g. every run not_ready). Both are "
                     "normal at start-up, while each station's first data is still arriving and the workers "
                     "warm up.")
    if b.get("late"):
        notes.append(f"  late results {b['late']}: runs that reported after their batch had expired; their "
                     "outputs are stored (see `stationflow inspect`) but not uploaded again.")
    return notes


def render_summary(summary: dict[str, Any]) -> str:
    lines = ["", "=== summary ==="]
    p = summary["produced"]
    lines.append(f"produced {p['messages']} messages ({p['bad']} deliberately bad) for {summary['stations']} "
                 f"stations in {summary['produce_s']:.1f} s; ingested {summary['messages_ingested']} messages, "
                 f"{summary['records_ingested']} records; dead letters {summary['dead_letters']} "
                 f"{summary['dead_letters_by_reason']}")
    drain = "drained" if summary["drained"] else "NOT drained (bounded wait ran out)"
    lines.append(f"pipeline {drain} in {summary['drain_s']:.1f} s; heartbeat runs scheduled {summary['heartbeat_runs']}")
    b = summary["batches"]
    lines.append(f"batches: created {b['created']}, uploaded {b['uploaded']}, skipped (no ok result) {b['skipped']}, "
                 f"expired {b['expired']}, still open {b['open']}, late results {b.get('late', 0)}")
    lines += batch_notes(b)
    w = max(len(m) for m in summary["modules"])
    lines.append(f"{'module':<{w}}  {'runs ok':>7}  {'none':>5}  {'failed':>6}  {'batches':>7}  {'results':>7}  "
                 "failure reasons")
    for m, row in summary["modules"].items():
        reasons = ", ".join(f"{k} {n}" for k, n in row["failed_reasons"].items())
        lines.append(f"{m:<{w}}  {row['ok']:>7}  {row['none']:>5}  {row['failed']:>6}  {row['uploaded']:>7}  "
                     f"{row['uploaded_results']:>7}  {reasons}")
    lines.append("(batches and results: read back from the MODULE-OUTPUT-* topics. Results can be fewer than ok "
                 "runs: a run that reports after its batch expired is stored but not uploaded, and a batch still "
                 "open or uploading when the read ended is not counted yet. not_ready / upstream_failed: the "
                 "station's inputs had not all arrived.)")
    for s, outs in summary["samples"].items():
        lines.append(f"station {s}:")
        for m, fig in outs.items():
            text = json.dumps(fig, ensure_ascii=False)
            lines += textwrap.wrap(text, WIDTH, initial_indent=f"  {m:<{w}} ", subsequent_indent=" " * (w + 3),
                                   break_long_words=False, break_on_hyphens=False)
    if summary["errors"]:
        lines.append("UNEXPECTED:")
        lines += [f"  - {e}" for e in summary["errors"]]
    else:
        lines.append("no unexpected errors")
    lines.append(f"logs: {summary['log_dir']}" if summary.get("log_dir")
                 else "logs: removed with the demo's scratch folder (--log-dir DIR keeps them)")
    return "\n".join(lines)
