"""`stationflow config check [FILE]`: validate a configuration and show what it resolves to."""

from __future__ import annotations

import click

from stationflow.cli import get_settings


@click.group()
def config() -> None:
    """Validate and show the effective configuration."""


@config.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--full", is_flag=True,
              help="Also write every topic and module with all its keys, not only the overrides.")
@click.pass_context
def check(ctx: click.Context, file: str | None, full: bool) -> None:
    """Validate FILE (default: --config / STATIONFLOW_CONFIG, else built-in defaults) plus
    the STATIONFLOW_* environment, and print the effective configuration as TOML with
    secrets masked. Exit status 2 on any configuration error."""
    settings = get_settings(ctx, file)
    header = [f"# effective stationflow configuration (secrets masked); source: "
              f"{settings.source or 'built-in defaults'}"]
    if settings.env_applied:
        header.append("# overridden by environment: " + ", ".join(settings.env_applied))
    if not full:
        header.append("# topic and module defaults: `stationflow topics` or `config check --full`")
    click.echo("\n".join(header) + "\n")
    click.echo(settings.to_toml(masked=True, full=full), nl=False)
