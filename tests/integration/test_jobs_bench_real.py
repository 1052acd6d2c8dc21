"""`python -m bench.jobs_bench --real` at the smallest size: the options of the capacity
figures (stations per RQ job, write linger, per-phase breakdown) run and are reported. No
performance threshold: only that every phase was measured."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_real_station_jobs_bench_reports_group_size_linger_and_phases() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.jobs_bench", "--real", "--stations", "6", "--repeat", "1",
                           "--group-size", "2", "--linger-ms", "0", "--breakdown", "--sim-s", "10"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "6 traffic stations" in out and "2 stations per RQ job" in out and "write linger 0 ms" in out
    line = next(x for x in out.splitlines() if "run 1: CPU ms/job" in x)
    phases = {k.strip(): v for k, v in re.findall(r"([a-zA-Z ]+?) (\d+\.\d+)(?:,|$)", line.split("=", 1)[1])}
    assert set(phases) == {"take", "read", "decode", "input build", "algorithms", "writes", "RQ and the rest"}
    assert all(float(phases[k]) > 0 for k in ("take", "read", "input build", "writes"))
