"""`stationflow demo`: the whole system on one machine, started and stopped by one command.

A private redis-server and the bundled broker on free ports (unless given), every topic
created, N `stationflow ingest` and M `stationflow worker` subprocesses pointed at them, the
traffic generator in a thread of this process, a progress line every ~2 s, then a drain
(bounded), a summary, and a stop of everything this run started. Each child runs in its own
process group and is stopped by group, also on Ctrl-C, SIGTERM and errors.

customer_mining has no inputs, so only a heartbeat runs it (spec §6.5). The demo configures
`heartbeat_s` for it; the workers' sweepers tick it (workers/heartbeat.py): every
`heartbeat_s` one run per known station in the batch
`customer_mining:heartbeat:0:<tick epoch seconds>`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stationflow import processes
from stationflow import status as st
from stationflow.demo_report import export_lines, render_summary

#: failure reasons a demo run may show without anything being wrong: a station whose data
#: has not all arrived yet is `not_ready` (and its dependents `upstream_failed`)
EXPECTED_FAILURES = frozenset({"not_ready", "upstream_failed"})
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


# ---- Kafka ----------------------------------------------------------------------------------------

def create_topics(settings: Any, bootstrap: str, partitions: int) -> list[str]:
    from stationflow.sending import create_input_topics

    admin = {**settings.kafka.admin_config(), "bootstrap_servers": bootstrap}
    names = [t.topic for t in settings.catalogue.topics]
    create_input_topics(admin, names, partitions)
    from kafka.admin import KafkaAdminClient

    from stationflow.local import wait_for

    client = KafkaAdminClient(**admin)
    try:
        def all_there() -> bool:
            meta = client.describe_topics(names)
            return len(meta) == len(names) and all(not m.get("error_code") and m.get("partitions") for m in meta)

        wait_for(all_there, 30.0, f"{len(names)} topics in the broker's metadata", interval=0.2)
    finally:
        client.close()
    return names


def read_uploads(settings: Any, bootstrap: str, idle_s: float = 1.5) -> dict[str, dict[str, int]]:
    """What the workers uploaded, read back from every local module's output topic: messages,
    distinct batch ids (the key) and station results, per module. Read to the end rather
    than trusting end offsets (a local broker may under-report them)."""
    from kafka import KafkaConsumer, TopicPartition

    outs = {m.output_topic: m.name for m in settings.catalogue.modules if m.runs == "local"}
    counts = {m: {"messages": 0, "batches": 0, "results": 0} for m in outs.values()}
    keys: dict[str, set[bytes]] = {m: set() for m in outs.values()}
    consumer = KafkaConsumer(**{**settings.kafka.consumer_config(), "bootstrap_servers": bootstrap,
                                "group_id": None, "enable_auto_commit": False})
    try:
        tps = [TopicPartition(t, p) for t in outs for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            got = consumer.poll(timeout_ms=300)
            if got:
                quiet_since = time.monotonic()
            for tp, recs in got.items():
                m = outs[tp.topic]
                for rec in recs:
                    counts[m]["messages"] += 1
                    keys[m].add(rec.key or b"")
                    counts[m]["results"] += int(json.loads(rec.value).get("stations_count", 0))
    finally:
        consumer.close()
    for m, ks in keys.items():
        counts[m]["batches"] = len(ks)
    return counts


class Producer(threading.Thread):
    """The traffic generator, paced by its simulated clock, until the duration or `stop()`."""

    def __init__(self, settings: Any, bootstrap: str, opts: DemoOptions) -> None:
        super().__init__(name="stationflow-demo-producer", daemon=True)
        self.settings, self.bootstrap, self.opts = settings, bootstrap, opts
        self.halt = threading.Event()
        self.summary: Any = None
        self.error: BaseException | None = None
        self.bad = 0

    def stop(self) -> None:
        self.halt.set()

    def _messages(self, source: Iterator[Any]) -> Iterator[Any]:
        for m in source:
            if self.halt.is_set():
                return
            self.bad += m.reason is not None
            yield m

    def run(self) -> None:
        from kafka import KafkaProducer

        from stationflow.sending import send_traffic
        from stationflow.traffic import SimClock, Traffic

        try:
            o = self.opts
            traffic = Traffic(stations=o.stations, seed=o.seed, catalogue=self.settings.catalogue, bad_rate=o.bad_rate)
            producer = KafkaProducer(**{**self.settings.kafka.producer_config(), "bootstrap_servers": self.bootstrap})
            try:
                self.summary = send_traffic(self._messages(traffic.messages()), producer,
                                            SimClock(traffic.start_ms, o.speed), duration_s=o.duration_s,
                                            progress_s=3600, echo=lambda _s: None)
            finally:
                producer.close(timeout=10)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.error = e


# ---- the run -----------------------------------------------------------------------------------

def heartbeat_runs(r: Any, settings: Any) -> int:
    """Runs the workers' heartbeat ticks scheduled (plain-text counter, see workers/heartbeat.py)."""
    from store.counters import Counters

    return Counters(r, settings.prefix).get("heartbeat").get("runs", 0)


def _snapshot(r: Any, settings: Any, bootstrap: str, lag: bool = True, queue_r: Any = None) -> st.Snapshot:
    snap = st.gather(r, settings.prefix, settings.queue.name, workers=False, queue_r=queue_r)
    if lag:
        try:
            snap.lag = st.consumer_lag({**settings.kafka.admin_config(), "bootstrap_servers": bootstrap},
                                       settings.kafka.group_id, [t.topic for t in settings.catalogue.consumed_topics()])
        except Exception as e:  # noqa: BLE001 - progress goes on without lag
            snap.lag_error = str(e)
    return snap


def drained(snap: st.Snapshot, produced: int, r: Any, settings: Any, baseline: int = 0) -> bool:
    """Every message produced by this run ingested (`baseline`: the count before it, for a
    reused Redis), no job queued or running, no batch open, no order second waiting to close."""
    from store.keys import keys_for

    v = st.summarise(snap)
    k = keys_for(r, settings.prefix)
    open_seconds = sum(int(r.zcard(key)) for t in settings.catalogue.topics if t.kind == "orders"
                       for key in k.orders_due_all(t.alias))
    return (v["messages"] - baseline >= produced and v["queued"] == 0 and v["running"] == 0
            and v["batches_open"] == 0 and open_seconds == 0)


def module_table(snap: st.Snapshot, uploads: dict[str, dict[str, int]], settings: Any) -> dict[str, dict[str, Any]]:
    runs = st.runs_by_module(snap.counters.get("runs", {}))
    out = {}
    for m in settings.catalogue.local_modules():
        r = runs.get(m, {"ok": 0, "none": 0, "failed": 0})
        out[m] = {"ok": r["ok"], "none": r["none"], "failed": r["failed"],
                  "failed_reasons": {k[7:]: n for k, n in r.items() if k.startswith("failed:")},
                  "uploaded": uploads.get(m, {}).get("batches", 0),
                  "upload_messages": uploads.get(m, {}).get("messages", 0),
                  "uploaded_results": uploads.get(m, {}).get("results", 0)}
    return out


def samples(r: Any, settings: Any, n: int) -> dict[str, dict[str, Any]]:
    """A few stations' latest outputs, as key figures."""
    from store.windows import WindowStore

    stations = WindowStore(r, settings.catalogue, settings.prefix).stations()[:n]
    out = {}
    for s in stations:
        raw = st.read_station(r, settings.catalogue, s, [m for m in settings.catalogue.local_modules()],
                              prefix=settings.prefix)
        out[s] = {m: st.key_figures(items[0]["payload"], limit=5) for m, items in raw["outputs"].items() if items}
    return out


def unexpected(table: dict[str, dict[str, Any]], snap: st.Snapshot, run: Run) -> list[str]:
    errs = list(run.errors)
    for m, row in table.items():
        bad = {k: n for k, n in row["failed_reasons"].items() if k not in EXPECTED_FAILURES}
        if bad:
            errs.append(f"module {m}: runs failed with {bad}")
    jobs_failed = st.summarise(snap)["jobs_failed"]
    if jobs_failed:
        errs.append(f"{jobs_failed} RQ job(s) failed (see `rq info` / the failed job registry)")
    for c in run.children:
        for line in c.alarms()[:3]:
            errs.append(f"{c.name} logged: {line.strip()[:200]}")
        if c.exit_code not in (None, 0) and not (c.expected_stop and c.exit_code in (-signal.SIGTERM, -signal.SIGKILL)):
            errs.append(f"{c.name} exited with code {c.exit_code} (log {c.log_path})")
    return errs


def _finished(summary: dict[str, Any], run: Run, t_start: float, interrupted: bool) -> dict[str, Any]:
    """The summary's closing fields: outcome, elapsed time, every process started."""
    summary["interrupted"] = interrupted
    summary["ok"] = not summary["errors"] and not interrupted
    summary["elapsed_s"] = round(time.monotonic() - t_start, 2)
    summary["processes"] = [{"name": c.name, "pid": c.pid, "exit_code": c.exit_code} for c in run.children] + [
        {"name": n, "pid": pid, "exit_code": None} for n, pid in run.server_pids.items()]
    return summary


def keep_running(run: Run, summary: dict[str, Any]) -> None:
    """`--keep`: print the summary and the `export` lines that point other shells at this
    demo, write the JSON summary, then wait (servers, ingesters and workers running) until
    Ctrl-C or SIGTERM; a child that dies meanwhile ends the wait with its log."""
    run.echo(render_summary(summary))
    run.echo("\nkept running until Ctrl-C. In another shell, point every command at this demo:\n")
    run.echo("\n".join(export_lines(summary["env"])))
    run.echo("\nthen e.g. `stationflow status`, `stationflow inspect --keys`, "
             "`rq info --url \"$STATIONFLOW_REDIS_URL\"`")
    if run.opts.json_summary:
        Path(run.opts.json_summary).write_text(json.dumps(summary, indent=2, default=str))
    while True:
        time.sleep(1.0)
        check_children(run)


def _echo_err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_demo(opts: DemoOptions, echo: Callable[[str], None] = print) -> int:
    """The demo; returns the exit status (0 ok, 1 something unexpected failed, 130 interrupted)."""
    from stationflow.settings import Settings

    run = Run(opts, echo)
    t_start = time.monotonic()
    interrupted = False
    summary: dict[str, Any] = {}
    shown = False  # the summary was printed (--keep prints it before waiting)
    producer: Producer | None = None
    old_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        start_servers(run)
        env = child_env(run)
        settings = Settings.load(env=env)
        r = settings.redis.connect()
        qr = settings.connect_queue() if settings.queue.redis_url is not None else None
        create_topics(settings, run.bootstrap, opts.partitions)
        echo(f"created {len(settings.catalogue.topics)} topics ({opts.partitions} partitions each); logs in {run.log_dir}")
        for i in range(opts.ingesters):
            spawn(run, "ingest", i, ["ingest", "--from-beginning"],
                  {**env, "STATIONFLOW_INSTANCE": f"demo-{i}", "STATIONFLOW_LOG_LEVEL": "INFO"})
        for i in range(opts.workers):
            spawn(run, "worker", i, ["worker"], env)
        echo(f"started {opts.ingesters} ingester(s) (consumer group {env['STATIONFLOW_GROUP_ID']}) and "
             f"{opts.workers} worker(s): pids "
             + ", ".join(f"{c.name}={c.pid}" for c in run.children))
        start_console(run, env)
        baseline = st.summarise(st.gather(r, settings.prefix, settings.queue.name, workers=False,
                                          queue_r=qr))["messages"]
        producer = Producer(settings, run.bootstrap, opts)
        echo(f"producing {opts.stations} stations for {opts.duration_s:g} s at speed {opts.speed:g} "
             f"(seed {opts.seed}); customer_mining every {opts.heartbeat_s:g} s")
        producer.start()
        prev = None
        t_prod = time.monotonic()
        while producer.is_alive():
            producer.join(opts.progress_s)
            check_children(run)
            snap = _snapshot(r, settings, run.bootstrap, queue_r=qr)
            echo(f"[{time.monotonic() - t_start:5.1f}s] " + st.progress_line(snap, prev))
            prev = snap
        produce_s = time.monotonic() - t_prod
        if producer.error is not None:
            raise DemoError(f"the producer failed: {type(producer.error).__name__}: {producer.error}")
        sent = producer.summary.sent if producer.summary else 0
        if producer.summary and producer.summary.errors:
            run.errors.append(f"{producer.summary.errors} message(s) failed to send")
        echo(f"producer done: {sent} messages; draining (at most {opts.drain_timeout_s:g} s)")
        t_drain = time.monotonic()
        from workers import heartbeat

        ok_drain, calm, held = False, 0, opts.keep
        while time.monotonic() - t_drain < opts.drain_timeout_s:
            check_children(run)
            snap = _snapshot(r, settings, run.bootstrap, queue_r=qr)
            calm = calm + 1 if drained(snap, sent, r, settings, baseline) else 0
            if calm >= 2 and not held:  # no heartbeat tick from now on, then drain once more
                heartbeat.hold(r, settings.catalogue, settings.prefix, time.time(), span_s=600)
                held, calm = True, 0
            if calm >= 2:  # twice in a row: a closing order second or a sweep may still enqueue
                ok_drain = True
                break
            echo(f"[{time.monotonic() - t_start:5.1f}s] draining: " + st.progress_line(snap, prev))
            prev = snap
            time.sleep(1.0 if calm else opts.progress_s)
        drain_s = time.monotonic() - t_drain
        if not ok_drain:
            run.errors.append(f"the pipeline did not drain within {opts.drain_timeout_s:g} s")
        if not opts.keep:
            for c in run.children:  # stop before reading the logs and exit codes
                stop_child(c)
        snap = _snapshot(r, settings, run.bootstrap, lag=False, queue_r=qr)
        uploads = read_uploads(settings, run.bootstrap)
        table = module_table(snap, uploads, settings)
        v = st.summarise(snap)
        summary = {
            "ok": True,
            "stations": opts.stations,
            "produced": {"messages": sent, "bad": producer.bad},
            "produce_s": round(produce_s, 2),
            "messages_ingested": v["messages"],
            "records_ingested": v["records"],
            "dead_letters": v["dead_letters"],
            "dead_letters_by_reason": st.dead_letters_by(snap.dlq_counts),
            "drained": ok_drain,
            "drain_s": round(drain_s, 2),
            "heartbeat_runs": heartbeat_runs(r, settings),
            "batches": {"created": v["batches_created"], "uploaded": v["batches_uploaded"],
                        "skipped": v["batches_skipped"], "expired": v["batches_expired"], "open": v["batches_open"],
                        "late": int(snap.counters.get("batches", {}).get("late", 0))},
            "modules": table,
            "samples": samples(r, settings, opts.samples),
            "log_dir": str(run.log_dir),
            "env": {k: env[k] for k in ("STATIONFLOW_REDIS_URL", "STATIONFLOW_QUEUE_REDIS_URL", "STATIONFLOW_KAFKA",
                                        "STATIONFLOW_GROUP_ID", "STATIONFLOW_CONFIG") if k in env},
        }
        summary["errors"] = unexpected(table, snap, run)
        if opts.keep:
            shown = True
            keep_running(run, _finished(summary, run, t_start, False))
    except KeyboardInterrupt:
        if shown:  # --keep: Ctrl-C is how it ends
            echo("stopping everything")
        else:
            interrupted = True
            echo("interrupted: stopping everything")
    except DemoError as e:
        run.errors.append(str(e))
        _echo_err(f"error: {e}")
    except Exception as e:
        from stationflow.cli import one_line

        known = one_line(e)  # a server that cannot be reached: the same line as every command's
        run.errors.append(known.message if known else f"{type(e).__name__}: {e}")
        _echo_err(f"error: {run.errors[-1]}")
    finally:
        if producer is not None:
            producer.stop()
        if producer is not None and producer.is_alive():
            producer.join(15)
        stop_all(run)
        signal.signal(signal.SIGTERM, old_term)
    if not summary:
        summary = {"ok": False, "errors": run.errors or ["interrupted"], "log_dir": str(run.log_dir)}
    _finished(summary, run, t_start, interrupted)
    if not opts.log_dir and not (summary["errors"] and run.children):  # kept: the logs of a failure
        shutil.rmtree(run.log_dir, ignore_errors=True)
        summary["log_dir"] = None
    if "modules" in summary and not shown:
        echo(render_summary(summary))
    if opts.json_summary:
        Path(opts.json_summary).write_text(json.dumps(summary, indent=2, default=str))
    if interrupted:
        return 130
    return 0 if summary["ok"] else 1
