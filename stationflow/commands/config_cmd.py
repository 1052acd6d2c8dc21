"""`stationflow config check [FILE]`: validate a configuration and show what it resolves to."""

from __future__ import annotations

import json
from typing import Any

import click

from stationflow.cli import CommandFailed, get_settings


@click.group()
def config() -> None:
    """Validate and show the effective configuration."""


def import_problems(settings: Any) -> list[str]:
    """Every configured algorithm (local modules) and hook path that cannot be imported, one
    message each naming the setting and the path: the worker would stop on the first of them
    at start-up, so `config check` reports them all before a roll-out."""
    from workers.algorithms import AlgorithmImportError, resolve

    paths = [(f"modules.{m}.algorithm", settings.catalogue.by_module[m].algorithm or "")
             for m in settings.catalogue.local_modules()]
    paths += [(f"hooks.{k}", v) for k, v in (("result_handler", settings.hooks.result_handler),
                                              ("batch_upload_handler", settings.hooks.batch_upload_handler)) if v]
    problems = []
    for where, path in paths:
        try:
            resolve(path, where)
        except AlgorithmImportError as e:
            problems.append(f"{where} = {path!r} cannot be imported: {str(e).partition('cannot be loaded: ')[2]}")
    return problems


@config.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--full", is_flag=True,
              help="Also write every topic and module with all its keys, not only the overrides.")
@click.option("--json", "as_json", is_flag=True,
              help="The effective configuration as JSON (secrets masked): source, env_applied, settings.")
@click.pass_context
def check(ctx: click.Context, file: str | None, full: bool, as_json: bool) -> None:
    """Validate FILE (default: --config / STATIONFLOW_CONFIG, else built-in defaults) plus
    the STATIONFLOW_* environment, import every algorithm and hook path it names, and print
    the effective configuration as TOML with secrets masked. Exit status 2 on any
    configuration error or a path that cannot be imported (each is listed on stderr).
    With a Redis Cluster (redis.url redis+cluster://) it also connects, lists the masters
    and the slots they cover (all 16384, or exit 2), and pings queue.redis_url."""
    settings = get_settings(ctx, file)
    problems = import_problems(settings)
    if problems:
        for p in problems[:-1]:
            click.echo(f"config error: {p}", err=True)
        raise CommandFailed(problems[-1], 2, "config error")
    topology: dict[str, Any] = {}
    if settings.redis.is_cluster or settings.queue.redis_url is not None:
        try:
            topology = redis_topology(settings)
        except Exception as e:  # noqa: BLE001 - any failure to reach either Redis is this one-line error
            raise CommandFailed(str(e), 2, "config error") from None
    if as_json:
        click.echo(json.dumps({"source": settings.source, "env_applied": list(settings.env_applied),
                               **topology, "settings": settings.to_dict(masked=True, full=full)},
                              indent=2, default=str))
        return
    header = [f"# effective stationflow configuration (secrets masked); source: "
              f"{settings.source or 'built-in defaults'}"]
    if settings.env_applied:
        header.append("# overridden by environment: " + ", ".join(settings.env_applied))
    if not full:
        header.append("# topic and module defaults: `stationflow topics` or `config check --full`")
    if "redis_cluster" in topology:
        c = topology["redis_cluster"]
        header.append(f"# redis cluster: {len(c['masters'])} masters: "
                      + ", ".join(f"{m['node']} ({m['slots']} slots)" for m in c["masters"])
                      + f"; slots covered {c['slots_covered']}/{c['slots_total']}")
    if "queue_redis" in topology:
        header.append(f"# queue redis: {topology['queue_redis']['url']} reachable")
    click.echo("\n".join(header) + "\n")
    click.echo(settings.to_toml(masked=True, full=full), nl=False)


def redis_topology(settings: Any) -> dict[str, Any]:
    """What `config check` reports of the servers (also under these keys in `--json`):
    `redis_cluster` {masters: [{node, slots}], slots_covered, slots_total} with a cluster,
    `queue_redis` {url (masked), reachable} with queue.redis_url. Raises (one-line message)
    when a server cannot be reached or slots are left uncovered."""
    from store.connection import SLOTS, cluster_report, redact

    out: dict[str, Any] = {}
    if settings.redis.is_cluster:
        r = settings.redis.connect(retries=1)
        try:
            masters, covered = cluster_report(r)
        finally:
            r.close()
        if covered < SLOTS:
            raise ValueError(f"Redis Cluster {redact(settings.redis.url)} covers only {covered} of {SLOTS} "
                             "slots (a master without replica is down, or slots were never assigned)")
        out["redis_cluster"] = {"masters": [{"node": n, "slots": k} for n, k in masters.items()],
                                "slots_covered": covered, "slots_total": SLOTS}
    if settings.queue.redis_url is not None:
        q = settings.connect_queue(retries=1)
        q.close()
        out["queue_redis"] = {"url": redact(settings.queue.redis_url), "reachable": True}
    return out
