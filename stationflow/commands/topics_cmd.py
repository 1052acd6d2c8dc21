"""`stationflow topics`: the topic catalogue as the running configuration sees it."""

from __future__ import annotations

import json
from typing import Any

import click

from parsers.catalogue import Catalogue
from stationflow.cli import get_settings
from stationflow.inspection import human_duration


def catalogue_rows(cat: Catalogue) -> list[dict[str, Any]]:
    """One row per topic (inputs first, then module outputs), plain values for --json."""
    rows = []
    for t in cat.topics:
        rows.append({
            "topic": t.topic,
            "alias": t.alias,
            "kind": t.kind,
            "cap": t.window_size,
            "ttl_s": t.ttl_s,
            "retention_s": t.retention_s,
            "max_bytes": t.max_bytes,
            "produced_by": t.module,
            "runs": cat.by_module[t.module].runs if t.module else None,
            "consumed": t in cat.consumed_topics(),
            "used_by": list(cat.modules_using(t.alias)),
        })
    return rows


def render_table(rows: list[dict[str, Any]]) -> str:
    head = ("TOPIC", "ALIAS", "KIND", "CAP", "TTL", "RETENTION", "USED BY")
    body = [
        (r["topic"], r["alias"], r["kind"], str(r["cap"]), human_duration(r["ttl_s"]),
         human_duration(r["retention_s"]), ", ".join(r["used_by"]) or "-")
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    right = {3}  # numbers right-aligned
    lines = []
    for row in [head, *body]:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.pass_context
def topics(ctx: click.Context, as_json: bool) -> None:
    """List every topic (13 inputs, 9 module outputs) with its window kind, cap, TTL,
    retention and the modules that use it, after configuration overrides."""
    cat = get_settings(ctx).catalogue
    rows = catalogue_rows(cat)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(render_table(rows))
