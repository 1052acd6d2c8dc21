"""`stationflow inspect`: one station's windows and outputs, decoded from msgpack."""

from __future__ import annotations

import json

import click


@click.command("inspect")
@click.argument("station", required=False)
@click.argument("alias", required=False)
@click.option("--keys", "show_keys", is_flag=True, help="Print the Redis key schema with a redis-cli example each.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--outputs", default=1, show_default=True, type=click.IntRange(min=1),
              help="How many stored outputs per module to read (the newest is shown).")
@click.pass_context
def inspect(ctx: click.Context, station: str | None, alias: str | None, show_keys: bool, as_json: bool,
            outputs: int) -> None:
    """Show STATION's windows (or only ALIAS: a topic alias, topic name or module name),
    with the age of each topic's newest record, whether it is stale, and the latest output
    of each module.

    \b
    stationflow inspect 1053405539402387456
    stationflow inspect 1053405539402387456 car_order --json
    stationflow inspect --keys
    """
    from stationflow.cli import get_settings
    from stationflow.status import now_ms, read_station, render_keys, render_station, station_view
    from store.connection import StoreUnavailable
    from store.keys import describe_keys

    settings = get_settings(ctx)
    if show_keys:
        rows = describe_keys(settings.prefix)
        if as_json:
            click.echo(json.dumps([dict(zip(("pattern", "type", "meaning", "example"), r, strict=True))
                                   for r in rows], indent=2))
        else:
            click.echo(render_keys(rows))
        return
    if not station:
        raise click.UsageError("give a STATION id (or --keys for the key schema)")
    cat = settings.catalogue
    names = None
    if alias:
        try:
            names = [cat.topic(alias).alias]
        except Exception as e:  # the catalogue suggests the closest name
            raise click.BadParameter(str(e), param_hint="ALIAS") from None
    try:
        r = settings.redis.connect(retries=1)
        raw = read_station(r, cat, station, names, prefix=settings.prefix, outputs=outputs)
    except StoreUnavailable as e:
        raise click.ClickException(f"cannot read Redis: {e}") from None
    view = station_view(cat, raw, now_ms())
    if as_json:
        click.echo(json.dumps(view, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(render_station(view))
