"""`stationflow demo` end to end, as a user runs it: a subprocess that starts its own Redis,
broker, ingester and workers, then stops them all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parsers.catalogue import default_catalogue
from stationflow.local import LocalServerError, find_redis_server, find_tansu

pytestmark = [pytest.mark.heavy(48)]


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _servers_available():
    try:
        find_redis_server()
        find_tansu()
    except LocalServerError as e:
        pytest.skip(str(e))


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from stationflow.cli import main; sys.exit(main())", "demo", *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STATIONFLOW_")}


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie no longer counts: it has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _group_members(pgid: int) -> list[int]:
    """Processes still in process group `pgid` (grandchildren of a stopped child included)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(d.name))
    return out


def _no_process_left(summary: dict) -> None:
    pids = [p["pid"] for p in summary["processes"]]
    assert len(pids) >= 5 and all(pids)  # 1 ingester, 2 workers, redis-server, broker
    deadline = time.monotonic() + 5
    while any(_alive(p) or _group_members(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [p for p in pids if _alive(p)] == []
    assert [m for p in pids for m in _group_members(p)] == []


def test_demo_runs_every_module_uploads_batches_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "summary.json"
    proc = subprocess.run(_cmd("--stations", "20", "--duration", "15", "--json-summary", str(out),
                               "--log-dir", str(tmp_path / "logs")),
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=150)
    assert out.exists(), proc.stdout + proc.stderr
    s = json.loads(out.read_text())
    assert s["errors"] == [], proc.stdout[-3000:]
    assert proc.returncode == 0 and s["ok"] is True

    assert s["produced"]["messages"] > 1000
    assert s["messages_ingested"] == s["produced"]["messages"]  # drained: every message read
    assert s["records_ingested"] > s["messages_ingested"]  # multi-station pushes fan out
    assert s["drained"] is True
    assert s["dead_letters"] == s["produced"]["bad"]  # each deliberately bad message, once

    modules = s["modules"]
    assert set(modules) == set(default_catalogue().local_modules())
    for name, row in modules.items():  # customer_mining runs on the demo's heartbeat
        assert row["ok"] > 0, (name, row)
        assert row["uploaded"] > 0 and row["uploaded_results"] >= row["uploaded"], (name, row)
        assert set(row["failed_reasons"]) <= {"not_ready", "upstream_failed"}, (name, row)
    assert s["heartbeat_runs"] >= 20
    b = s["batches"]
    assert b["uploaded"] == sum(r["uploaded"] for r in modules.values()) > 0
    assert b["open"] == 0 and b["created"] == b["uploaded"] + b["skipped"]

    assert len(s["samples"]) == 3
    for station, outs in s["samples"].items():
        assert outs["load_prediction"]["station_id"] == station
    text = proc.stdout
    assert "=== summary ===" in text and "records " in text.split("=== summary ===")[0]
    _no_process_left(s)


def test_demo_stops_everything_on_ctrl_c(tmp_path):
    out = tmp_path / "summary.json"
    proc = subprocess.Popen(_cmd("--stations", "5", "--duration", "120", "--json-summary", str(out),
                                 "--log-dir", str(tmp_path / "logs")),
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:  # wait until the children run and traffic flows
            if line.startswith("["):
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, rest
    assert "interrupted: stopping everything" in rest
    s = json.loads(out.read_text())
    assert s["interrupted"] is True and s["ok"] is False
    _no_process_left(s)


def test_children_stop_when_the_demo_is_killed(tmp_path):
    """SIGKILL leaves no chance to clean up: the children still go (parent-death signal)."""
    import shutil

    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) not installed")
    logs = tmp_path / "logs"
    proc = subprocess.Popen(_cmd("--stations", "3", "--duration", "120", "--log-dir", str(logs)),
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pids: list[int] = []
    try:
        for line in proc.stdout:
            if line.startswith("started "):
                pids = [int(x.split("=")[1]) for x in line.split("pids ", 1)[1].strip().split(", ")]
            if line.startswith("["):
                break
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(pids) == 3
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [p for p in pids if _alive(p)] == []
