"""Child-process supervision: start, stop (SIGTERM, then SIGKILL), die with the parent.

One implementation for every process stationflow starts itself: the App's ingesters and
workers, the demo's, and the local redis-server and broker. Every child leads its own
session and process group (`start_new_session`), so

- a terminal's Ctrl-C reaches only the parent, which decides what to forward (a second
  SIGINT would make an RQ worker abandon its job);
- stopping the group also stops the child's own children (a worker pool, a server's helpers).

A child also gets a signal when the parent dies, even by SIGKILL, which no atexit handler
survives: Linux's parent-death signal, set by setpriv (util-linux), which then execs the
command so the pid and the group stay the child's own. Linux ties that signal to the thread
that started the child, so it is only set when starting from the main thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path


def death_signal_prefix(signame: str = "TERM") -> list[str]:
    """The argv prefix that sends the child SIG`signame` when this process dies; empty where
    it cannot work (not Linux, no setpriv, not the main thread)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", signame, "--"] if setpriv else []


def stationflow_argv(*args: str) -> list[str]:
    """The `stationflow` command line of this interpreter (no console script on PATH needed)."""
    return [sys.executable, "-c", "import sys; from stationflow.cli import main; sys.exit(main())", *args]


def start(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
          log_path: Path | None = None, death_signal: str = "TERM") -> subprocess.Popen[bytes]:
    """Start `argv` as the leader of a new process group that gets SIG`death_signal` when we
    die. With `log_path`, stdout and stderr are appended to that file and stdin is closed."""
    full = [*death_signal_prefix(death_signal), *argv]
    if log_path is None:
        return subprocess.Popen(full, env=None if env is None else dict(env), cwd=cwd, start_new_session=True)
    log = open(log_path, "ab")  # the child holds its own descriptor
    try:
        return subprocess.Popen(full, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=None if env is None else dict(env), cwd=cwd, start_new_session=True)
    finally:
        log.close()


def send(popen: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the child itself (not its group: a supervisor child forwards on its own)."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(signum)


def kill(popen: subprocess.Popen[bytes], wait_s: float = 5.0) -> None:
    """SIGKILL the child's process group (a crash, not a stop) and reap the child."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(wait_s)


def stop(popen: subprocess.Popen[bytes], grace_s: float, *, leftovers: bool = False) -> int | None:
    """SIGTERM the child's process group, SIGKILL it if the child lingers past `grace_s`;
    returns the exit code. `leftovers`: SIGKILL the group afterwards anyway, so no grandchild
    (a worker pool's process) outlives a child that exited first."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            kill(popen)
    if leftovers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
    return popen.returncode
