"""`stationflow parse TOPIC [FILE|-]`: run the real parser on one message value, offline.

For operators checking a dead letter or a producer's payload: prints one JSON line per
record the ingester would write, and one error line per reason it would dead-letter.
"""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson

from parsers.catalogue import CatalogueError
from parsers.envelopes import parse_message
from parsers.records import ParseError
from stationflow.cli import get_settings


def _line(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()


@click.command("parse")
@click.argument("topic")
@click.argument("file", required=False, default="-", type=click.File("rb"))
@click.pass_context
def parse(ctx: click.Context, topic: str, file: Any) -> None:
    """Parse one message value of TOPIC (topic name or alias) read from FILE (default stdin).

    Prints {station_id, alias, op, key, payload} per record; for a bad message or a rejected
    element prints {error, message, element_index} and exits with status 2.
    """
    settings = get_settings(ctx)
    try:
        spec = settings.catalogue.topic(topic)
    except CatalogueError as e:
        raise click.BadParameter(str(e), param_hint="TOPIC") from None
    value = file.read()
    try:
        result = parse_message(spec, value, max_depth=settings.max_depth)
    except ParseError as e:
        click.echo(_line({"error": e.reason, "message": e.detail, "element_index": e.element_index}))
        ctx.exit(2)
    for r in result.records:
        click.echo(_line({"station_id": r.station_id, "alias": r.alias, "op": r.op, "key": r.key,
                          "payload": r.payload}))
    for rej in result.rejections:
        click.echo(_line({"error": rej.reason, "message": rej.detail, "element_index": rej.element_index}))
    sys.stdout.flush()
    if result.rejections:
        ctx.exit(2)
