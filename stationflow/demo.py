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

This module is the run's sequence; its parts are demo_children (servers and child
processes), demo_kafka (topics, the producer thread, uploads read back), demo_snapshots
(progress and drain) and demo_report (the printed summary).
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stationflow import status as st
from stationflow.demo_children import (
    DemoError,
    DemoOptions,
    Run,
    check_children,
    child_env,
    spawn,
    start_console,
    start_servers,
    stop_all,
    stop_child,
)
from stationflow.demo_kafka import Producer, create_topics, read_uploads
from stationflow.demo_report import export_lines, render_summary
from stationflow.demo_snapshots import drained, heartbeat_runs, module_table, samples, snapshot, unexpected


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
            snap = snapshot(r, settings, run.bootstrap, queue_r=qr)
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
            snap = snapshot(r, settings, run.bootstrap, queue_r=qr)
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
        snap = snapshot(r, settings, run.bootstrap, lag=False, queue_r=qr)
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
