"""`stationflow inspect`: one station's windows and outputs, decoded from msgpack."""

from __future__ import annotations

import json
from typing import Any

import click

#: the station id the key schema's examples are written with (store/keys.py)
EXAMPLE_STATION = "1053405539402387456"


@click.command("inspect")
@click.argument("station", required=False)
@click.argument("alias", required=False)
@click.option("--keys", "show_keys", is_flag=True,
              help="Print the Redis key schema with a complete `redis-cli -u URL ...` example each, "
                   "for a station this Redis holds.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (the Redis read under `source`).")
@click.option("--outputs", default=1, show_default=True, type=click.IntRange(min=1),
              help="How many stored outputs per module to read (the newest is shown).")
@click.pass_context
def inspect(ctx: click.Context, station: str | None, alias: str | None, show_keys: bool, as_json: bool,
            outputs: int) -> None:
    """Show STATION's windows (or only ALIAS: a topic alias, topic name or module name),
    with the age of each topic's newest record, whether it is stale, and the latest output
    of each module (a module name as ALIAS: only that module's). The first line names the
    Redis read.

    \b
    stationflow inspect 1053405539402387456
    stationflow inspect 1053405539402387456 car_order --json
    stationflow inspect --keys
    """
    from stationflow.cli import get_settings
    from stationflow.commands.common import source, source_line
    from stationflow.inspection import read_station, render_station, station_view
    from stationflow.status import now_ms

    settings = get_settings(ctx)
    if show_keys:
        _keys(settings, as_json)
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
    r = settings.redis.connect(retries=1)
    raw = read_station(r, cat, station, names, prefix=settings.prefix, outputs=outputs)
    view = station_view(cat, raw, now_ms())
    if as_json:
        click.echo(json.dumps({"source": source(settings), **view}, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(source_line(settings))
        click.echo(render_station(view))


def _keys(settings: Any, as_json: bool) -> None:
    """The key schema; the examples name the most recently seen station of this Redis (or the
    schema's own example id when it holds none) and the full `redis-cli -u URL` (with -c on a
    Redis Cluster: it follows MOVED to the master of each key's slot)."""
    from stationflow.commands.common import source, source_line
    from stationflow.inspection import render_keys
    from store.connection import redact
    from store.keys import describe_keys, keys_for

    r = settings.redis.connect(retries=1)
    k = keys_for(r, settings.prefix)
    pipe = r.pipeline(transaction=False)
    for key in k.stations_all():  # the registry's buckets (one key on one Redis)
        pipe.zrevrange(key, 0, 0, withscores=True)
    newest = sorted(((score, m) for page in pipe.execute() for m, score in page), reverse=True)
    station = newest[0][1].decode() if newest else EXAMPLE_STATION
    url = redact(settings.redis.connection_url())
    cli = _redis_cli(url, settings.redis.is_cluster)
    rows = [(p, t, m, ex.replace(EXAMPLE_STATION, station))
            for p, t, m, ex in describe_keys(settings.prefix, k.buckets)]
    if as_json:
        click.echo(json.dumps({"source": source(settings), "station": station, "redis_cli": cli,
                               "keys": [dict(zip(("pattern", "type", "meaning", "example"), row, strict=True))
                                        for row in rows]}, indent=2))
        return
    click.echo(source_line(settings))
    note = "" if newest else " (this Redis holds no station yet: the id is a placeholder)"
    password = " (put the password in place of ***)" if "***" in url else ""
    click.echo(f"examples for station {station}{note}{password}\n")
    click.echo(render_keys(rows, cli))


def _redis_cli(url: str, cluster: bool) -> str:
    """`redis-cli -u URL`; for a redis+cluster:// URL, -c and the first node's redis:// URL."""
    if not cluster:
        return f"redis-cli -u '{url}'"
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    cred, _, hosts = parts.netloc.rpartition("@")
    scheme = "rediss" if parts.scheme.startswith("rediss") else "redis"
    return f"redis-cli -c -u '{scheme}://{cred + '@' if cred else ''}{hosts.split(',')[0]}'"
