"""What a `stationflow demo` run starts and stops: its options, the private servers, the
child processes (each in its own process group, stopped by group) and what their logs say.

Every server and child is recorded in the `Run`, so a stop on any path (the end, Ctrl-C,
SIGTERM, an error) takes down exactly what this run started, in reverse.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stationflow import processes

#: log lines of a child that mean something went wrong
_ALARMS = ("Traceback (most recent call last)", " CRITICAL ")
#: log records whose traceback is known noise, not a fault: kafka-python 3.0.12's IO loop can
#: still read from a transport that `consumer.close()` has just closed and logs the resulting
#: AttributeError (the close completes normally; upstream dpkp/kafka-python#2995, #3097)
_BENIGN = ("(closed)>: Error receiving network data closing socket",)


def alarm_lines(text: str) -> list[str]:
    """The lines of a child's log that mean something went wrong (tracebacks of the benign
    records above excepted)."""
    out: list[str] = []
    previous = ""
    for line in text.splitlines():
        if any(a in line for a in _ALARMS):
            if not (line.startswith("Traceback") and any(b in previous for b in _BENIGN)):
                out.append(line)
        if not line.startswith((" ", "Traceback")):  # a log record's own line, not a traceback's
            previous = line
    return out


class DemoError(RuntimeError):
    """Something the demo cannot go on with; the message says what and how to fix it."""


@dataclass
class DemoOptions:
    stations: int = 20
    duration_s: float = 30.0
    ingesters: int = 1
    workers: int = 2
    speed: float = 5.0
    redis_url: str | None = None
    redis_cluster: int | None = None  # masters of a private Redis Cluster (queues on a plain Redis)
    kafka: str | None = None
    seed: int = 0
    partitions: int = 2
    bad_rate: float = 0.002
    heartbeat_s: float = 5.0
    drain_timeout_s: float = 40.0
    progress_s: float = 2.0
    samples: int = 3
    log_dir: str | None = None
    json_summary: str | None = None
    keep: bool = False  # leave servers and processes running after the summary, until Ctrl-C


@dataclass
class Child:
    role: str
    index: int
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None
    expected_stop: bool = False

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alarms(self) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return alarm_lines(text)


@dataclass
class Run:
    """What this run started (stopped in reverse) and what it saw."""

    opts: DemoOptions
    echo: Callable[[str], None]
    log_dir: Path = field(init=False)
    redis: Any = None
    broker: Any = None
    redis_url: str = ""
    queue_redis: Any = None  # the plain Redis of the queues, beside a private cluster
    bootstrap: str = ""
    children: list[Child] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    produced: dict[str, Any] = field(default_factory=dict)
    server_pids: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.log_dir = Path(self.opts.log_dir or tempfile.mkdtemp(prefix="sf-demo-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)


# ---- servers and processes ----------------------------------------------------------------------

def start_servers(run: Run) -> None:
    from stationflow.local import LocalServerError, start_broker, start_redis

    o = run.opts
    try:
        if o.redis_url:
            run.redis_url = o.redis_url
        elif o.redis_cluster:
            from stationflow.local_cluster import start_cluster

            run.redis = start_cluster(masters=o.redis_cluster, replicas=0)
            run.redis_url = run.redis.url
            run.queue_redis = start_redis(dir=run.log_dir / "queue-redis")
            run.server_pids.update({f"redis-node-{n.port}": n.pid for n in run.redis.nodes})
            run.server_pids["queue-redis"] = run.queue_redis.pid
            run.echo(f"Redis Cluster of {o.redis_cluster} masters on {run.redis_url}; queues on "
                     f"{run.queue_redis.url}")
        else:
            run.redis = start_redis(dir=run.log_dir / "redis")
            run.redis_url = run.redis.url
            run.server_pids["redis-server"] = run.redis.pid
            run.echo(f"redis-server on {run.redis_url} (pid {run.redis.pid})")
        if o.redis_url and not o.kafka:
            run.echo("note: a fresh broker restarts every offset at 0; windows a previous run stored in this "
                     "Redis skip those offsets as replays (use another --seed or an empty Redis)")
        if o.kafka:
            run.bootstrap = o.kafka
        else:
            run.broker = start_broker()
            run.bootstrap = run.broker.bootstrap
            run.server_pids["broker"] = run.broker.pid
            run.echo(f"broker (Tansu) on {run.bootstrap} (pid {run.broker.pid})")
    except LocalServerError as e:
        raise DemoError(str(e)) from None


#: a local broker gives a new group its partitions only after the session timeout of the
#: members it waits for; short group timeouts make the ingesters start in seconds, not ~25 s
DEMO_CONFIG = """\
# written by `stationflow demo`: short consumer-group timeouts for a one-machine run
[kafka.consumer]
session_timeout_ms = 6000
heartbeat_interval_ms = 1000
"""


def child_env(run: Run) -> dict[str, str]:
    """The environment of every child: our servers, a group of its own, quiet logs, and the
    demo's configuration file unless the caller named one (STATIONFLOW_CONFIG)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATIONFLOW_") or k == "STATIONFLOW_CONFIG"}
    if not env.get("STATIONFLOW_CONFIG"):
        cfg = run.log_dir / "demo.toml"
        cfg.write_text(DEMO_CONFIG)
        env["STATIONFLOW_CONFIG"] = str(cfg)
    env.update({
        "STATIONFLOW_REDIS_URL": run.redis_url,
        **({"STATIONFLOW_QUEUE_REDIS_URL": run.queue_redis.url} if run.queue_redis is not None else {}),
        "STATIONFLOW_KAFKA": run.bootstrap,
        "STATIONFLOW_GROUP_ID": f"stationflow-demo-{os.getpid()}",
        "STATIONFLOW_LOG_LEVEL": "WARNING",
        "STATIONFLOW_MODULES": json.dumps({"customer_mining": {"heartbeat_s": run.opts.heartbeat_s}}),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def spawn(run: Run, role: str, index: int, args: list[str], env: dict[str, str]) -> Child:
    c = Child(role, index, processes.stationflow_argv(*args), run.log_dir / f"{role}-{index}.log")
    c.popen = processes.start(c.argv, env=env, log_path=c.log_path)
    run.children.append(c)
    return c


def start_console(run: Run, env: dict[str, str]) -> Child | None:
    """`stationflow console` on a free loopback port, stopped with the other children; its URL
    is printed. Skipped, with a note, where the `console` extra is not installed."""
    import importlib.util

    from stationflow.local import free_port

    if importlib.util.find_spec("starlette") is None or importlib.util.find_spec("uvicorn") is None:
        run.echo("console: not started (pip install 'stationflow[console]')")
        return None
    port = free_port()
    c = spawn(run, "console", 0, ["console", "--port", str(port)], env)
    run.echo(f"console on http://127.0.0.1:{port}/ (pid {c.pid})")
    return c


def stop_child(c: Child, grace_s: float = 15.0) -> None:
    """SIGTERM the child's process group (an ingester commits, a worker ends its job), then SIGKILL."""
    p = c.popen
    if p is None:
        return
    c.expected_stop = True
    # the group may still hold grandchildren (a worker pool): none may outlive us
    c.exit_code = processes.stop(p, grace_s, leftovers=True)


def stop_all(run: Run) -> None:
    for c in reversed(run.children):
        with contextlib.suppress(Exception):
            stop_child(c)
    for server in (run.broker, run.redis, run.queue_redis):
        if server is not None:
            with contextlib.suppress(Exception):
                server.close()


def check_children(run: Run) -> None:
    for c in run.children:
        if not c.expected_stop and c.popen is not None and c.popen.poll() is not None:
            c.exit_code = c.popen.returncode
            raise DemoError(f"{c.name} (pid {c.pid}) exited with code {c.exit_code}; log {c.log_path}:\n"
                            f"{c.log_tail()}")

