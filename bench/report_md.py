"""The benchmark report as text: the headline lines and report.md, from the report's data
(bench/report.py measures; this only formats)."""

from __future__ import annotations

from typing import Any


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
        cpu = (e.get("steady") or {}).get("worker_cpu_ms_per_station_job")
        lines.append(f"highest sustainable load, {what}: "
                     + (f"{mx:,.0f} records/s{stations}{top}" if mx else "none of the steps")
                     + (f"; worker CPU {cpu:.1f} ms per station job in the steady phase"
                        if cpu is not None and cpu == cpu else ""))
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
         "| p50 / p95 / p99 ms | deferred batches p50 / p99 ms | worker RQ jobs/s (station jobs/s) "
         "| worker CPU ms per station job | runs fired (deferred) | absorbed: coalescing / rate limit |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for name, x in runs:
        st = x["steady"]
        rc = x.get("runs") or {}
        L += [f"| {name} | {_n(x.get('max_sustainable_records_s'))} | {_n(x.get('max_sustainable_stations'))} "
              f"| {_n(st['achieved_records_s'])} | {_n(st['p50_ms'])} / {_n(st['p95_ms'])} / {_n(st['p99_ms'])} "
              f"| {_n(st.get('deferred_p50_ms'))} / {_n(st.get('deferred_p99_ms'))} "
              f"({st.get('deferred_envelopes', 0):,}) | {_n(st.get('worker_jobs_s'))} "
              f"({_n(st.get('station_jobs_s'))}) | {_d(st.get('worker_cpu_ms_per_station_job'))} "
              f"| {rc.get('fired', 0):,} ({rc.get('deferred', 0):,}) "
              f"| {rc.get('absorbed_coalescing', 0):,} / {rc.get('absorbed_rate_limit', 0):,} |"]
    return L + [""]


def _d(x: Any) -> str:
    """A figure of a few units, with one decimal."""
    return "–" if x is None or (isinstance(x, float) and x != x) else f"{x:,.1f}"


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
    if _section(L, "## 1. Ingest", ing):
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
    if _section(L, "## 2. Jobs", jobs):
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
    if _section(L, "## 3. End to end", e):
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
    if _section(L, "## 4. Memory", mem):
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
    if _section(L, "## 5. Console", con):
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


def _section(lines: list[str], title: str, data: dict[str, Any]) -> bool:
    """Append a section's title (and its failure, if it failed); True when it has figures."""
    lines += [title, ""]
    if "error" in data:
        lines += [f"Failed: `{data['error']}`", ""]
        return False
    return bool(data)
