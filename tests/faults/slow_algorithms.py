"""The reference algorithms made slow on demand, for the worker fault scenarios.

Configured by dotted path (`slow_algorithms:<module>`, with this folder on PYTHONPATH). Each
call sleeps the number of seconds written in the file named by $STATIONFLOW_FAULTS_DELAY_FILE
(read on every call, so a test can slow the workers down and speed them up while they run),
or $STATIONFLOW_FAULTS_DELAY_S when no file is given; then it runs the reference algorithm.
$STATIONFLOW_FAULTS_SLOW_MODULES (comma-separated) limits the delay to those modules, and
$STATIONFLOW_FAULTS_CALLS_FILE, when set, gets one line "<module> <station> <ms>" per call
(appended with O_APPEND: whole lines from any number of processes).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workers import reference

MODULES = ("load_prediction", "pv_prediction", "evaluation_model", "SOH_model", "customer_mining",
           "operation_optimization", "electricity_price", "station_guidance", "thermal_management")


def delay_s() -> float:
    path = os.environ.get("STATIONFLOW_FAULTS_DELAY_FILE")
    try:
        if path:
            return float(Path(path).read_text().strip() or 0)
        return float(os.environ.get("STATIONFLOW_FAULTS_DELAY_S", "0") or 0)
    except (OSError, ValueError):
        return 0.0


def _slow(fn: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    name = fn.__name__

    def run(station_id: str, inp: Any) -> Any:
        calls = os.environ.get("STATIONFLOW_FAULTS_CALLS_FILE")
        if calls:
            fd = os.open(calls, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{name} {station_id} {int(time.time() * 1000)}\n".encode())
            finally:
                os.close(fd)
        only = os.environ.get("STATIONFLOW_FAULTS_SLOW_MODULES")
        d = delay_s() if not only or name in only.split(",") else 0.0
        if d > 0:
            time.sleep(d)
        return fn(station_id, inp)

    run.__name__ = run.__qualname__ = fn.__name__
    return run


load_prediction = _slow(reference.load_prediction)
pv_prediction = _slow(reference.pv_prediction)
evaluation_model = _slow(reference.evaluation_model)
SOH_model = _slow(reference.SOH_model)  # noqa: N816 (the module's name)
customer_mining = _slow(reference.customer_mining)
operation_optimization = _slow(reference.operation_optimization)
electricity_price = _slow(reference.electricity_price)
station_guidance = _slow(reference.station_guidance)
thermal_management = _slow(reference.thermal_management)


def modules_config() -> dict[str, dict[str, str]]:
    """[modules.<name>] algorithm = "slow_algorithms:<name>" for every module."""
    return {m: {"algorithm": f"slow_algorithms:{m}"} for m in MODULES}


def env(delay_file: Path, *, slow_modules: tuple[str, ...] = (), calls_file: Path | None = None) -> dict[str, str]:
    """What a worker process needs to find and configure these algorithms."""
    here = str(Path(__file__).resolve().parent)
    pythonpath = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    out = {"PYTHONPATH": pythonpath, "STATIONFLOW_FAULTS_DELAY_FILE": str(delay_file)}
    if slow_modules:
        out["STATIONFLOW_FAULTS_SLOW_MODULES"] = ",".join(slow_modules)
    if calls_file is not None:
        out["STATIONFLOW_FAULTS_CALLS_FILE"] = str(calls_file)
    return out


def read_calls(calls_file: Path) -> list[tuple[str, str, int]]:
    """(module, station, ms) of every call logged so far."""
    try:
        lines = calls_file.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            out.append((parts[0], parts[1], int(parts[2])))
    return out
