"""The processes of one `App.start()`: the children, and their supervision until a stop
request, a failed child, or (with `until_idle`) the drained end of the work."""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stationflow import processes

if TYPE_CHECKING:
    from stationflow.settings import Settings

log = logging.getLogger("stationflow.app")


@dataclass
class Child:
    role: str  # ingest | worker
    index: int
    proc: subprocess.Popen

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    @classmethod
    def spawn(cls, role: str, index: int, args: list[str], env: Mapping[str, str]) -> Child:
        env = {**env, "STATIONFLOW_INSTANCE": f"{role}-{index}"}
        # the App forwards a terminal's Ctrl-C once (stationflow.processes); a child gets
        # SIGTERM, its graceful stop, if the App's process dies
        return cls(role, index, processes.start(processes.stationflow_argv(*args), env=env))

    def signal(self, signum: int) -> None:
        processes.send(self.proc, signum)

    def kill(self) -> None:
        processes.kill(self.proc)


class Running:
    """The processes of one `App.start()`: supervise with `wait()`, end with `stop()`."""

    POLL_S = 0.2

    def __init__(self, children: list[Child], settings: Settings, until_idle: float | None) -> None:
        self.children = children
        self.settings = settings
        self.until_idle = until_idle
        self._stop_signal: int | None = None
        self._signals = 0
        self._lock = threading.Lock()
        atexit.register(self.kill)

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask every child to stop (safe from a signal handler); a second request kills."""
        with self._lock:
            self._signals += 1
            first = self._signals == 1
            self._stop_signal = signum
        if first:
            log.info("%s: stopping %d process(es)", signal.Signals(signum).name, len(self.children))
            for c in self.children:
                c.signal(signum)
        else:
            log.warning("second stop request: killing the processes")
            for c in self.children:
                c.kill()

    def wait(self, stop_timeout_s: float = 60.0) -> int:
        """Supervise until a stop request, a failed child, or (until_idle) the drained end."""
        draining_since: float | None = None
        while True:
            if self._stop_signal is not None:
                return self._finish(stop_timeout_s, clean=True)
            ingesters = [c for c in self.children if c.role == "ingest"]
            for c in self.children:
                code = c.proc.poll()
                if code is None:
                    continue
                if code != 0 or self.until_idle is None or c.role != "ingest":
                    log.error("%s (pid %d) exited with status %d: stopping the others", c.name,
                              c.proc.pid, code)
                    self._signal_all(signal.SIGTERM)
                    self._finish(stop_timeout_s, clean=False)
                    return code if code > 0 else 1
            if self.until_idle is not None and all(c.proc.poll() == 0 for c in ingesters):
                draining_since = draining_since or time.monotonic()
                if self._drained() or time.monotonic() - draining_since > self._drain_limit_s():
                    if not self._drained():
                        log.warning("work still open after %.0f s of draining; stopping anyway",
                                    self._drain_limit_s())
                    self._signal_all(signal.SIGTERM)
                    return self._finish(stop_timeout_s, clean=True)
            time.sleep(self.POLL_S)

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        self.request_stop(signum)
        return self._finish(timeout_s, clean=True)

    def kill(self) -> None:
        for c in self.children:
            c.kill()

    def _signal_all(self, signum: int) -> None:
        for c in self.children:
            c.signal(signum)

    def _finish(self, timeout_s: float, clean: bool) -> int:
        deadline = time.monotonic() + timeout_s
        for c in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(max(0.0, deadline - time.monotonic()))
        worst = 0
        for c in self.children:
            code = c.proc.poll()
            if code is None:
                log.error("%s (pid %d) did not stop within %.0f s: killed", c.name, c.proc.pid, timeout_s)
                c.kill()
                worst = worst or 1
            elif code > 0:
                worst = worst or code
            elif code < 0 and -code not in (signal.SIGTERM, signal.SIGINT):
                worst = worst or 1
        return worst if clean else (worst or 1)

    def _drain_limit_s(self) -> float:
        cat = self.settings.catalogue
        longest = max((cat.by_module[m].batch_timeout_s for m in cat.local_modules()), default=5.0)
        return longest + 10 * self.settings.batch.sweep_interval_s + 30.0

    def _drained(self) -> bool:
        """No queued or running station job and no open batch."""
        try:
            from rq.registry import StartedJobRegistry

            from store.tracker import BatchTracker
            from workers.scheduling import station_queue

            r = self.settings.redis.connect(check=False)
            qr = self.settings.connect_queue(check=False) if self.settings.queue.redis_url is not None else r
            try:
                name = self.settings.queue.name
                queued = station_queue(qr, name).count
                running = StartedJobRegistry(name, connection=qr).count
                due = BatchTracker(r, self.settings.prefix).due_count()
            finally:
                r.close()
                qr.close()
        except Exception as e:  # noqa: BLE001 - an unreachable Redis just means "not yet"
            log.debug("drain check failed: %s", e)
            return False
        return queued == 0 and running == 0 and due == 0
