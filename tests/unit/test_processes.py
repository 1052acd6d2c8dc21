"""stationflow.processes: the one child-process supervision (App, demo, local servers)."""

import os
import signal
import sys
import time

import pytest

from stationflow import processes

pytestmark = pytest.mark.unit

PY = sys.executable


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_child_leads_its_own_group_and_logs_to_its_file(tmp_path):
    log = tmp_path / "child.log"
    p = processes.start([PY, "-c", "import os; print('pgid', os.getpgid(0) == os.getpid())"], log_path=log)
    assert p.wait(30) == 0
    assert log.read_text().strip() == "pgid True"


def test_stop_sends_sigterm_first():
    p = processes.start([PY, "-c", "import time; time.sleep(60)"])
    time.sleep(0.2)
    assert processes.stop(p, grace_s=10) == -signal.SIGTERM


def test_stop_kills_a_child_that_ignores_sigterm():
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    p = processes.start([PY, "-u", "-c", code])
    time.sleep(0.5)  # the handler is installed before the sleep
    t0 = time.monotonic()
    assert processes.stop(p, grace_s=0.5) == -signal.SIGKILL
    assert time.monotonic() - t0 < 10


def test_stop_with_leftovers_takes_the_grandchildren_along(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, signal, time\n"
            "g = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
            f"open({str(pidfile)!r}, 'w').write(str(g.pid))\n"
            "time.sleep(60)\n")
    p = processes.start([PY, "-c", code])
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    processes.stop(p, grace_s=10, leftovers=True)
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_kill_and_send():
    p = processes.start([PY, "-c", "import time; time.sleep(60)"])
    processes.send(p, signal.SIGINT)
    assert p.wait(10) != 0
    processes.send(p, signal.SIGINT)  # already gone: no error
    q = processes.start([PY, "-c", "import time; time.sleep(60)"])
    processes.kill(q)
    assert q.returncode == -signal.SIGKILL


def test_stationflow_argv_runs_this_interpreters_cli(tmp_path):
    argv = processes.stationflow_argv("--help")
    assert argv[0] == sys.executable
    p = processes.start(argv, log_path=tmp_path / "help.log")
    assert p.wait(60) == 0
