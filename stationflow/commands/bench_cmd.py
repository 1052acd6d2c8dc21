"""`stationflow bench`: run `python -m bench` (bench/report.py) from the source checkout.

The benchmarks live in the repository, not in the installed package (nothing imports them),
so the command runs them as a child process with the checkout as its working directory; the
per-component benchmarks stay runnable alone with `python -m bench.<name>`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import click

#: the checkout this package was installed from (editable install or source tree)
CHECKOUT = Path(__file__).resolve().parents[2]


@click.command()
@click.option("--quick", is_flag=True, help="Small sizes and short phases (under 3 minutes).")
@click.option("--smoke", is_flag=True,
              help="Tiny sizes: checks that every section runs and reports (figures mean nothing).")
@click.option("--out", "out", default="bench", show_default=True, type=click.Path(file_okay=False),
              help="Directory for report.md and report.json.")
@click.option("--only", default=None, metavar="SECTIONS",
              help="Comma-separated subset of: ingest, jobs, e2e, memory, console (default: all).")
@click.option("--redis-cluster", "masters", type=click.IntRange(min=1), default=None, metavar="N",
              help="Instead: one Redis against a private Redis Cluster of N masters (write path, Redis CPU "
                   "per record per master, key/slot balance at 10,000 stations); writes cluster.md/json.")
@click.pass_context
def bench(ctx: click.Context, quick: bool, smoke: bool, out: str, only: str | None, masters: int | None) -> None:
    """Run the benchmarks (ingest, jobs, end to end, memory, console) and write the report.

    \b
    Every figure is the median of several runs with min/max, next to its bare baseline
    (kafka-python consume, grouped RPUSH+LTRIM, RQ trivial jobs). Needs redis-server and the
    bundled broker (or STATIONFLOW_KAFKA); never touches any other Redis.
    Needs the source checkout (bench/ is not installed with the package).
    Exit status 1 when a section failed (the report still shows the others).
    """
    if not (CHECKOUT / "bench" / "report.py").is_file():
        raise click.ClickException(f"the benchmarks are not installed: run `stationflow bench` from a source "
                                   f"checkout (no bench/report.py under {CHECKOUT})")
    argv = [sys.executable, "-m", "bench", "--out", str(Path(out).resolve())]
    if smoke:
        argv.append("--smoke")
    elif quick:
        argv.append("--quick")
    if only:
        argv += ["--only", only]
    if masters is not None:
        argv += ["--redis-cluster", str(masters)]
    proc = subprocess.Popen(argv, cwd=CHECKOUT)

    def forward(signum: int, frame: object) -> None:
        proc.send_signal(signum)  # the bench stops its servers and children, then exits

    old = signal.signal(signal.SIGTERM, forward)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        code = proc.wait()  # Ctrl-C reached the child too (same process group)
    finally:
        signal.signal(signal.SIGTERM, old)
    ctx.exit(code)
