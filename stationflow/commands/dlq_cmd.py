"""`stationflow dlq`: list, show and replay dead letters (the `<prefix>:{dlq}` stream, or on a
cluster its buckets `<prefix>:dlq:{<bucket>}` merged: store.dlq).

Replay sends an entry's raw bytes back to its original topic, where the ingesters parse it
again: useful once the cause was fixed on our side (a configuration such as `max_bytes`, a
parser bug) or the entry was dead-lettered by mistake. An element of a multi-station message
was stored alone, so it is re-wrapped in its topic's envelope first. Each sent message
carries the headers `stationflow-replay-of` (the entry id) and `stationflow-replay-source`
(topic:partition:offset[:element]), and the entry's replay count is kept in the plain-text
hash `<prefix>:counters:dlq_replayed` (entry id -> times replayed).
"""

from __future__ import annotations

import json
import re
from typing import Any

import click

from parsers.catalogue import Catalogue
from stationflow.deadletters import (
    REPLAYED_GROUP,
    NotReplayable,
    entry_json,
    hexdump,
    iter_entries,
    matches,
    preview,
    replay_counts,
    replay_value,
    send,
    source_of,
)


def _context(ctx: click.Context, as_json: bool = False) -> tuple[Any, Any, Any]:
    """Settings, client and dead-letter stream; the text output starts with the source line."""
    from stationflow.cli import get_settings
    from stationflow.commands.common import source_line
    from store.dlq import DeadLetters, old_dlq_warning

    settings = get_settings(ctx)
    r = settings.redis.connect(retries=1)
    if warning := old_dlq_warning(r, settings.prefix):
        click.echo(warning, err=True)
    if not as_json:
        click.echo(source_line(settings))
    return settings, r, DeadLetters(r, settings.prefix, settings.dlq_maxlen, settings.dlq_raw_max_bytes)


#: an entry id as `dlq list` prints it: milliseconds-sequence, then `.<bucket>` for a bucket's stream
ENTRY_ID = re.compile(r"^\d+-\d+(\.\d+)?$")


def check_ids(ids: tuple[str, ...] | list[str]) -> None:
    """Refuse malformed entry ids before Redis does (one line, exit 2)."""
    from stationflow.cli import CommandFailed

    bad = [i for i in ids if not ENTRY_ID.match(i)]
    if bad:
        raise CommandFailed(f"not a dead-letter id: {', '.join(bad)} (ids look like 1763524804417-0, or 1763524804417-0.17 "
                            "in a bucket; "
                            "`stationflow dlq list` prints them)", 2)


def _topic_name(cat: Catalogue, topic: str | None) -> str | None:
    if topic is None:
        return None
    try:
        return cat.topic(topic).topic
    except Exception:  # noqa: BLE001 - a topic outside the catalogue may still have entries
        return topic


# ---- commands -----------------------------------------------------------------------------------

@click.group("dlq")
def dlq() -> None:
    """Dead letters: bad input kept with its reason, raw bytes and origin."""


@dlq.command("list")
@click.option("--count", "-n", default=20, show_default=True, type=click.IntRange(min=1), help="Newest N entries.")
@click.option("--reason", help="Only this reason (e.g. bad_json, missing_station_id).")
@click.option("--topic", help="Only this topic (name or alias).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per entry and line, each with the Redis read under `source`.")
@click.pass_context
def list_cmd(ctx: click.Context, count: int, reason: str | None, topic: str | None, as_json: bool) -> None:
    """The newest dead letters, newest first, with totals by reason."""
    from stationflow.commands.common import source

    settings, r, dl = _context(ctx, as_json)
    topic = _topic_name(settings.catalogue, topic)
    picked = []
    for e in iter_entries(dl):
        if matches(e, reason, topic):
            picked.append(e)
            if len(picked) >= count:
                break
    replayed = replay_counts(r, settings.prefix, [e["id"] for e in picked])
    if as_json:
        for e in picked:
            click.echo(json.dumps({**entry_json(e, replayed[e["id"]]), "source": source(settings)}))
        return
    totals: dict[str, int] = {}
    for (t, rs), n in dl.counts().items():
        if topic is None or t == topic:
            totals[rs] = totals.get(rs, 0) + n
    click.echo(f"{dl.count()} entries in the stream; ever added by reason: "
               + (", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "none"))
    if not picked:
        click.echo("no matching entries")
        return
    click.echo(f"{'id':<20} {'topic:partition:offset[:element]':<44} {'reason':<18} {'bytes':>7}  detail")
    for e in picked:
        mark = f" [replayed {replayed[e['id']]}x]" if replayed[e["id"]] else ""
        detail = e["detail"] if len(e["detail"]) <= 70 else e["detail"][:67] + "..."
        click.echo(f"{e['id']:<20} {source_of(e):<44} {e['reason']:<18} {e['raw_len']:>7}  {detail}{mark}")


@dlq.command("show")
@click.argument("entry_id")
@click.option("--json", "as_json", is_flag=True, help="JSON, raw bytes as base64.")
@click.pass_context
def show_cmd(ctx: click.Context, entry_id: str, as_json: bool) -> None:
    """One entry: origin, reason, detail, times, and the raw bytes (text preview and hex)."""
    from datetime import UTC, datetime

    from stationflow.cli import CommandFailed
    from stationflow.commands.common import source

    check_ids([entry_id])
    settings, r, dl = _context(ctx, as_json)
    e = dl.get(entry_id)
    if e is None:
        raise CommandFailed(f"no dead letter {entry_id} (ids come from `stationflow dlq list`)")
    n = replay_counts(r, settings.prefix, [entry_id])[entry_id]
    if as_json:
        click.echo(json.dumps({**entry_json(e, n, full=True), "source": source(settings)}, indent=2))
        return

    def when(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"

    spec = settings.catalogue.by_topic.get(e["topic"])
    rows = [("id", e["id"]), ("topic", e["topic"] + (f" ({spec.alias})" if spec else " (not in the catalogue)")),
            ("partition", e["partition"]), ("offset", e["offset"]),
            ("element", "whole message" if e["element_index"] is None else e["element_index"]),
            ("reason", e["reason"]), ("detail", e["detail"]), ("record time", when(e["ts"])),
            ("dead-lettered", when(e["dead_at"])),
            ("raw", f"{e['raw_len']} bytes" + ("" if len(e["raw"]) >= e["raw_len"] else f", {len(e['raw'])} kept")),
            ("replayed", f"{n} time(s)")]
    for k, v in rows:
        click.echo(f"{k:>14}: {v}")
    click.echo("\ntext:\n" + preview(e["raw"], 2000))
    click.echo("\nhex:\n" + hexdump(e["raw"]))


@dlq.command("replay")
@click.argument("entry_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every entry in the stream (with --reason/--topic: every match).")
@click.option("--reason", help="Entries with this reason.")
@click.option("--topic", help="Entries of this topic (name or alias).")
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send nothing.")
@click.option("--bootstrap", help="Kafka bootstrap servers (default: settings / STATIONFLOW_KAFKA).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: source, dry_run, sent (or would_send) and skipped entries.")
@click.pass_context
def replay_cmd(ctx: click.Context, entry_ids: tuple[str, ...], all_: bool, reason: str | None,
               topic: str | None, dry_run: bool, bootstrap: str | None, as_json: bool) -> None:
    """Send dead letters back to their original topic (after the cause was fixed).

    \b
    stationflow dlq replay 1763524804417-0
    stationflow dlq replay --reason too_large --dry-run
    stationflow dlq replay --all --topic car_price
    """
    from stationflow.cli import CommandFailed

    check_ids(entry_ids)
    if entry_ids and (all_ or reason or topic):
        raise click.UsageError("give entry ids, or --all / --reason / --topic, not both")
    if not entry_ids and not (all_ or reason or topic):
        raise click.UsageError("nothing selected: give entry ids, --all, --reason R or --topic T")
    settings, r, dl = _context(ctx, as_json)
    topic = _topic_name(settings.catalogue, topic)
    if entry_ids:
        entries = []
        for i in entry_ids:
            e = dl.get(i)
            if e is None:
                raise CommandFailed(f"no dead letter {i} (ids come from `stationflow dlq list`)")
            entries.append(e)
    else:
        entries = [e for e in iter_entries(dl, newest_first=False) if matches(e, reason, topic)]
    plan: list[tuple[dict[str, Any], bytes]] = []
    refused = []
    for e in entries:
        try:
            plan.append((e, replay_value(settings.catalogue.by_topic.get(e["topic"]), e)))
        except NotReplayable as why:
            refused.append((e, str(why)))
    if as_json:
        _replay_json(settings, r, plan, refused, dry_run, bootstrap)
        return
    for e, reason_text in refused:
        click.echo(f"skip {e['id']}: {reason_text}", err=True)
    if dry_run:
        for e, value in plan:
            click.echo(f"would send {e['id']} ({source_of(e)}, {e['reason']}) -> {e['topic']}: "
                       f"{len(value)} bytes {preview(value, 80)}")
        click.echo(f"dry run: {len(plan)} to send, {len(refused)} skipped")
        return
    sent = send_and_count(settings, r, plan, bootstrap)
    for e, p, o in sent:
        click.echo(f"replayed {e['id']} -> {e['topic']}[{p}] offset {o}")
    click.echo(f"{len(sent)} replayed, {len(refused)} skipped")
    if len(sent) < len(plan):
        raise CommandFailed(f"{len(plan) - len(sent)} message(s) failed to send")


def _replay_json(settings: Any, r: Any, plan: list[tuple[dict[str, Any], bytes]],
                 refused: list[tuple[dict[str, Any], str]], dry_run: bool, bootstrap: str | None) -> None:
    """`dlq replay --json`: the same outcome as the text, as one object (exit 1 if a send failed)."""
    from stationflow.cli import CommandFailed
    from stationflow.commands.common import source

    out: dict[str, Any] = {"source": source(settings), "dry_run": dry_run,
                           "skipped": [{"id": e["id"], "why": why} for e, why in refused]}
    if dry_run:
        out["would_send"] = [{"id": e["id"], "source": source_of(e), "reason": e["reason"], "topic": e["topic"],
                              "bytes": len(v)} for e, v in plan]
        click.echo(json.dumps(out, indent=2))
        return
    sent = send_and_count(settings, r, plan, bootstrap)
    out["sent"] = [{"id": e["id"], "topic": e["topic"], "partition": p, "offset": o} for e, p, o in sent]
    out["failed"] = len(plan) - len(sent)
    click.echo(json.dumps(out, indent=2))
    if out["failed"]:
        raise CommandFailed(f"{out['failed']} message(s) failed to send")


def send_and_count(settings: Any, r: Any, plan: list[tuple[dict[str, Any], bytes]], bootstrap: str | None
                   ) -> list[tuple[dict[str, Any], int, int]]:
    """`send`, then count each acknowledged entry in `<prefix>:counters:dlq_replayed`."""
    from store.keys import Keys

    sent = send(settings, plan, bootstrap)
    if sent:
        pipe = r.pipeline(transaction=False)
        for e, _, _ in sent:
            pipe.hincrby(Keys(settings.prefix).counters(REPLAYED_GROUP), e["id"], 1)
        pipe.execute()
    return sent
