"""`stationflow bench`: run every benchmark against a private redis-server and broker and
write report.md + report.json (bench/report.py does the work; the per-component benchmarks
stay runnable alone with `python -m bench.<name>`)."""

from __future__ import annotations

import signal
from pathlib import Path

import click


def _interrupt(signum: int, frame: object) -> None:
    # a timeout's SIGTERM must still run the `finally` that stops our servers and children
    raise KeyboardInterrupt(f"signal {signum}")


@click.command()
@click.option("--quick", is_flag=True, help="Small sizes and short phases (under 3 minutes).")
@click.option("--smoke", is_flag=True,
              help="Tiny sizes: checks that every section runs and reports (figures mean nothing).")
@click.option("--out", "out", default="bench", show_default=True, type=click.Path(file_okay=False),
              help="Directory for report.md and report.json.")
@click.option("--only", default=None, metavar="SECTIONS",
              help="Comma-separated subset of: ingest, jobs, e2e, memory, console (default: all).")
@click.pass_context
def bench(ctx: click.Context, quick: bool, smoke: bool, out: str, only: str | None) -> None:
    """Run the benchmarks (ingest, jobs, end to end, memory, console) and write the report.

    \b
    Every figure is the median of several runs with min/max, next to its bare baseline
    (kafka-python consume, grouped RPUSH+LTRIM, RQ trivial jobs). Needs redis-server and the
    bundled broker (or STATIONFLOW_KAFKA); never touches any other Redis.
    Exit status 1 when a section failed (the report still shows the others).
    """
    from bench.report import SECTIONS, run

    sections = SECTIONS if not only else tuple(s.strip() for s in only.split(",") if s.strip())
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise click.BadParameter(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}",
                                 param_hint="--only")
    old = signal.signal(signal.SIGTERM, _interrupt)
    try:
        rep = run("smoke" if smoke else quick, Path(out), sections, log=lambda s: click.echo(s, err=True))
    finally:
        signal.signal(signal.SIGTERM, old)
    click.echo("\n".join(rep["headline"]))
    failed = [s for s in sections if "error" in rep.get(s, {})]
    if failed:
        click.echo(f"failed sections: {', '.join(failed)}", err=True)
        ctx.exit(1)
