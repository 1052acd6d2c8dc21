"""Station jobs per second of one worker process against bare RQ, and batch completion latency.

    python -m bench.jobs_bench [--stations 500] [--batch 50] [--repeat 3]
    python -m bench.jobs_bench --real [--stations 200] [--upload] [--profile FILE]

On a private redis-server, in one process, same worker class (SimpleWorker), same JSON
serializer:
- `bare RQ`: trivial jobs (a function returning None) enqueued with enqueue_many, drained by
  `SimpleWorker.work(burst=True)`: RQ's own per-job cost on this machine;
- `station jobs`: `workers.scheduling.schedule` of two modules per station (load_prediction
  and SOH_model, real windows, the algorithms stubbed to no-ops so only our overhead is
  measured: take, replay check, one windows read, input build, store output, report), drained
  the same way; uploads are off (no broker) so completed batches stay `uploading`.
- `--real`: station jobs as production runs them: windows filled by `stationflow.traffic`
  (every input topic, 168 h history, the last `--sim-s` seconds of device/order traffic)
  through `WindowStore.apply`, every module the ingester would plan per station (the local
  modules but heartbeat ones, those whose required inputs are stored: `ready_modules`), the reference algorithms, and with `--upload` a private broker receiving
  the batches (acks=all). With no-op algorithms too (`--real --noop`). `--profile FILE`
  writes a cProfile of the last drained run (the first delivers every stored closed order
  second; later runs see what a station job sees in steady state). `--redis-cluster N`: the
  same with the state on a private N-master Redis Cluster and the queue on the plain Redis.
- latency: a feeder thread schedules one batch of `--batch` stations every `--interval-ms`
  while the worker serves them; batch completion latency = completed - created (ms), p50/p99.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

import orjson
from rq import Queue
from rq.serializers import JSONSerializer

from parsers.batches import PlannedRun
from parsers.catalogue import Catalogue, default_catalogue
from parsers.envelopes import parse_message
from parsers.records import Source
from stationflow.local import start_redis
from store.memo import DEFAULT_MAX_ENTRIES
from store.tracker import BatchTracker
from workers import context as wctx
from workers.rqworker import StationWorker
from workers.scheduling import DEFAULT_GROUP_SIZE, ScheduleOptions, schedule

MODULES = ("load_prediction", "SOH_model")
#: queued jobs outlive the drain: with the default TTL (batch timeout + 5 s) a slow, shared
#: machine dropped the last jobs of a 500-job run before the worker reached them
JOB_TTL_S = 3600


def job_catalogue() -> Catalogue:
    """The default catalogue without rate control: these benches schedule the same stations
    run after run to measure what one job costs, which a min interval would defer."""
    cat = default_catalogue()
    return Catalogue.build(module_overrides={m: {"min_interval_s": 0} for m in cat.by_module})


def trivial() -> None:
    return None


def noop(station: str, inp: object) -> dict:
    return {}


def _stations(n: int) -> list[str]:
    return [f"{5_000_000_000_000_000_000 + i}" for i in range(n)]


def seed_windows(ctx: wctx.WorkerContext, stations: list[str]) -> None:
    cat = ctx.catalogue
    now = int(time.time() * 1000)
    rt = {"realTimeData": [
        {"stationId": s, "sendTime": f"2025-11-19 {h:02d}:00:00", "outputPowerPerStationAvg": 40.0 + h,
         "gunPower": {"gunNo": ["01", "02"], "outputPowerPerGunAvg": [20.0, 20.0 + h],
                      "outputPowerPerGunMax": [60.0, 60.0]}}
        for s in stations for h in range(24)]}
    msgs = [
        ("station_param", [{"stationId": s, "gunNum": 2, "hostCode": ["52000000000088"]} for s in stations]),
        ("environment_calendar", {"calendar": [{"date": f"2025-11-{d:02d}", "isHoliday": 0, "isWeekend": 0}
                                               for d in range(1, 29)]}),
        ("station_realtime_data", rt),
    ]
    batch = []
    for i, (alias, value) in enumerate(msgs):
        spec = cat.topic(alias)
        batch.append((Source(spec.topic, 0, i, now - 1000), parse_message(spec, orjson.dumps(value)).records))
    ctx.store.apply(batch, now)


def seed_traffic(ctx: wctx.WorkerContext, n: int, sim_s: float) -> list[str]:
    """Windows of `n` traffic stations after `sim_s` simulated seconds ending now."""
    from bench.store_bench import polls_of
    from stationflow.traffic import Traffic

    now = int(time.time() * 1000)
    traffic = Traffic(stations=n, seed=1, start_ms=now - int(sim_s * 1000))
    for poll in polls_of(traffic.messages(until_ms=now), 2000):
        ctx.store.apply(poll, now)
    ctx.store.flush_counters()
    return [st.id for st in traffic.stations]


def real_modules(cat) -> tuple[str, ...]:
    return tuple(m for m in cat.local_modules() if cat.by_module[m].heartbeat_s is None)


def ready_modules(ctx: wctx.WorkerContext, stations: list[str], modules: tuple[str, ...]) -> dict[str, list[str]]:
    """Per station, the `modules` the ingester would plan (spec §6.5 readiness: every required
    input stored, or a dependency planned before it): a module never ready at a station is
    not scheduled there in production, so the bench does not schedule it either."""
    from parsers.readiness import missing_required

    cat = ctx.catalogue
    names = list(dict.fromkeys(n for m in modules for n in cat.by_module[m].all_inputs))
    present = ctx.store.present(stations, names)
    out = {}
    for s in stations:
        have, planned = set(present.get(s, ())), []
        for m in cat.sort_modules(modules):
            if not missing_required(cat.by_module[m], have.union(planned)):
                planned.append(m)
        out[s] = planned
    return out


def bench_real(ctx: wctx.WorkerContext, stations: list[str], batch: int, seq: int, modules: dict[str, list[str]],
               cpu_ms: list[float], profile: str | None = None, group_size: int = DEFAULT_GROUP_SIZE) -> float:
    """Jobs/s of one drained run; appends the worker process's CPU ms per job (every thread)."""
    runs = [PlannedRun(s, m, f"{m}:REAL:{seq}:{i // batch}") for i, s in enumerate(stations) for m in modules[s]]
    qr = ctx.queue_r if ctx.queue_r is not None else ctx.r
    schedule(ctx.r, ctx.catalogue, runs, ScheduleOptions(queue="real", job_ttl_s=JOB_TTL_S, queue_r=ctx.queue_r,
                                                         group_size=group_size))
    q = Queue("real", connection=qr, serializer=JSONSerializer)
    w = StationWorker([q], connection=qr, serializer=JSONSerializer)
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t0, c0 = time.perf_counter(), time.process_time()
    w.work(burst=True, logging_level="WARNING")
    flush = getattr(ctx.uploader, "flush", None)
    if flush is not None:
        flush()
    dt = time.perf_counter() - t0
    cpu_ms.append((time.process_time() - c0) * 1000 / len(stations))
    if prof is not None:
        prof.disable()
        prof.dump_stats(profile)
    tr = BatchTracker(ctx.r)
    want = "uploaded" if ctx.uploader is not None else "uploading"
    ids = {f"{m}:REAL:{seq}:{i // batch}" for i, st in enumerate(stations) for m in modules[st]}
    states = [tr.get(b).get("state") for b in sorted(ids)]
    bad = [s for s in states if s not in (want, "skipped")]
    assert not bad, f"every batch must complete ({want}/skipped), got {bad[:5]}"
    return len(stations) / dt


class Phases:
    """Worker CPU per phase of the station jobs (`--real --breakdown`): each phase's function is
    wrapped to add its thread's CPU time (algorithms on their lanes); "RQ and the rest" is the
    process's CPU time minus the phases (RQ's dequeue/heartbeat/finish, lanes' hand-offs)."""

    NAMES = ("take", "read", "decode", "input build", "algorithms", "writes")

    def __init__(self, ctx: wctx.WorkerContext) -> None:
        from workers import group, jobs

        self.cpu = dict.fromkeys(self.NAMES, 0.0)
        self._lock = threading.Lock()
        jobs.take_group = self._wrap("take", jobs.take_group)
        ctx.store._fetch_replies = self._wrap("read", ctx.store._fetch_replies)
        ctx.store._decode = self._wrap("decode", ctx.store._decode)
        group.build_input = self._wrap("input build", group.build_input)
        group.GroupRun.write = self._wrap("writes", group.GroupRun.write)
        ctx.algorithms = {m: self._wrap("algorithms", fn) for m, fn in ctx.algorithms.items()}

    def _wrap(self, name: str, fn):
        def timed(*a, **kw):
            t = time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                dt = time.thread_time() - t
                with self._lock:
                    self.cpu[name] += dt
        return timed

    def reset(self) -> None:
        self.cpu = dict.fromkeys(self.NAMES, 0.0)

    def line(self, jobs: int, total_ms: float) -> str:
        per = {k: v * 1000 / jobs for k, v in self.cpu.items()}
        rest = total_ms - sum(per.values())
        return ", ".join([f"{k} {v:.2f}" for k, v in per.items()] + [f"RQ and the rest {rest:.2f}"])


def main_real(args: argparse.Namespace) -> None:
    import redis

    from store.connection import connect
    from workers import group

    if args.linger_ms is not None:
        group.WRITE_LINGER_S = args.linger_ms / 1000

    server = start_redis()
    broker = cluster = None
    try:
        r = redis.Redis.from_url(server.url)
        state, queue_r = r, None
        if args.redis_cluster:  # windows, batches and markers on the cluster, the queue on the plain Redis
            from stationflow.local_cluster import start_cluster

            cluster = start_cluster(masters=args.redis_cluster, replicas=0)
            state, queue_r = connect(cluster.url), r
        cat = job_catalogue()
        modules = real_modules(cat)
        overrides = {m: noop for m in cat.local_modules()} if args.noop else {}
        producer_config = None
        if args.upload:
            from stationflow.local import start_broker

            broker = start_broker()
            producer_config = {"bootstrap_servers": broker.bootstrap, "acks": "all", "linger_ms": 5}
        ctx = wctx.WorkerContext.build(state, cat, algorithms=overrides, producer_config=producer_config,
                                       hourly_memo_entries=0 if args.no_memo else DEFAULT_MAX_ENTRIES,
                                       queue_r=queue_r)
        if not args.upload:
            ctx.uploader = None
        ctx.background_upload = not args.sync_upload
        wctx.install(ctx)
        stations = seed_traffic(ctx, args.stations, args.sim_s)
        planned = ready_modules(ctx, stations, modules)
        cpu: list[float] = []
        phases = Phases(ctx) if args.breakdown else None
        rates, lines = [], []
        for i in range(args.repeat):
            if phases is not None:
                phases.reset()
            rates.append(bench_real(ctx, stations, args.batch, i, planned, cpu,
                                    args.profile if i == args.repeat - 1 else None, args.group_size))
            if phases is not None:
                lines.append(phases.line(len(stations), cpu[-1]))
        close = getattr(ctx.uploader, "close", None)
        if close is not None:
            close()
        kind = ("no-op" if args.noop else "reference") + (", hourly memo off" if args.no_memo else "")
        per_job = sum(len(v) for v in planned.values()) / len(stations)
        print(f"real station jobs: {len(stations)} traffic stations x {per_job:.1f} ready modules of {len(modules)}, "
              f"{kind} algorithms, {args.group_size} stations per RQ job, write linger "
              f"{group.WRITE_LINGER_S * 1000:g} ms, "
              f"uploads {('to a broker, ' + ('in the job' if args.sync_upload else 'upload thread')) if args.upload else 'off'}, SimpleWorker, {args.repeat} runs"
              + (f", state on a {args.redis_cluster}-master Redis Cluster" if args.redis_cluster else ""))
        print(f"  {statistics.median(rates):8.1f} jobs/s median (min {min(rates):.1f}, max {max(rates):.1f}); "
              f"worker CPU {statistics.median(cpu):.2f} ms/job (min {min(cpu):.2f}, max {max(cpu):.2f})")
        for i, line in enumerate(lines):
            print(f"  run {i + 1}: CPU ms/job {cpu[i]:.2f} = {line}")
    finally:
        if broker is not None:
            broker.stop()
        if cluster is not None:
            cluster.close()
        server.stop()


def bench_bare(r, n: int, cpu_ms: list[float] | None = None) -> float:
    """Jobs/s of draining `n` trivial jobs; appends the worker's CPU ms per job to `cpu_ms`."""
    q = Queue("bare", connection=r, serializer=JSONSerializer)
    q.enqueue_many([Queue.prepare_data("bench.jobs_bench.trivial", result_ttl=60) for _ in range(n)])
    w = StationWorker([q], connection=r, serializer=JSONSerializer)
    t0, c0 = time.perf_counter(), time.process_time()
    w.work(burst=True, logging_level="WARNING")
    dt = time.perf_counter() - t0
    if cpu_ms is not None:
        cpu_ms.append((time.process_time() - c0) * 1000 / n)
    return n / dt


def bench_station_jobs(ctx: wctx.WorkerContext, stations: list[str], batch: int, seq: int,
                       cpu_ms: list[float] | None = None) -> float:
    """Jobs/s of draining one job per station; appends the worker's CPU ms per job to `cpu_ms`
    (every thread of the process, the algorithm lane included; scheduling not counted)."""
    runs = [PlannedRun(s, m, f"{m}:BENCH:{seq}:{i // batch}") for i, s in enumerate(stations) for m in MODULES]
    schedule(ctx.r, ctx.catalogue, runs, ScheduleOptions(queue="bench", job_ttl_s=JOB_TTL_S))
    q = Queue("bench", connection=ctx.r, serializer=JSONSerializer)
    w = StationWorker([q], connection=ctx.r, serializer=JSONSerializer)
    t0, c0 = time.perf_counter(), time.process_time()
    w.work(burst=True, logging_level="WARNING")
    dt = time.perf_counter() - t0
    if cpu_ms is not None:
        cpu_ms.append((time.process_time() - c0) * 1000 / len(stations))
    done = sum(1 for i in range(0, len(stations), batch)
               if BatchTracker(ctx.r).get(f"load_prediction:BENCH:{seq}:{i // batch}").get("state") == "uploading")
    assert done == (len(stations) + batch - 1) // batch, "every batch must complete"
    return len(stations) / dt


def round_trips_per_job(ctx: wctx.WorkerContext, stations: list[str], batch: int, seq: int) -> float:
    """Redis round trips of one station job (`execute` called directly, same two modules):
    every command or pipeline the client sends counts once."""
    from redis.connection import Connection

    from workers import jobs

    runs = [PlannedRun(s, m, f"{m}:RT:{seq}:{i // batch}") for i, s in enumerate(stations) for m in MODULES]
    schedule(ctx.r, ctx.catalogue, runs, queue="rt", job_ttl_s=JOB_TTL_S)
    sent = [0]
    send = Connection.send_packed_command

    def counting(self: Connection, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        send(self, command, check_health)

    Connection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        for s in stations:
            jobs.execute(ctx, s, f"rt-{seq}-{s}")
    finally:
        Connection.send_packed_command = send  # type: ignore[method-assign]
    return sent[0] / len(stations)


def bench_latency(ctx: wctx.WorkerContext, stations: list[str], batch: int, batches: int,
                  interval_ms: float) -> list[float]:
    ids = []

    def feed() -> None:
        for k in range(batches):
            part = [stations[(k * batch + j) % len(stations)] for j in range(batch)]
            runs = [PlannedRun(s, m, f"{m}:LAT:0:{k}") for s in part for m in MODULES]
            schedule(ctx.r, ctx.catalogue, runs, ScheduleOptions(queue="lat"))
            ids.append(f"load_prediction:LAT:0:{k}")
            time.sleep(interval_ms / 1000)

    q = Queue("lat", connection=ctx.r, serializer=JSONSerializer)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    w = StationWorker([q], connection=ctx.r, serializer=JSONSerializer)
    # one long-running worker (as in production); it stops after 1 s without work
    w.work(max_idle_time=1, logging_level="WARNING")
    feeder.join()
    tr = BatchTracker(ctx.r)
    lat = []
    for bid in ids:
        b = tr.get(bid)
        if b.get("completed"):
            lat.append(int(b["completed"]) - int(b["created"]))
    return lat


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stations", type=int, default=500)
    ap.add_argument("--batch", type=int, default=50, help="stations per batch")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--latency-batches", type=int, default=40)
    ap.add_argument("--interval-ms", type=float, default=250.0)
    ap.add_argument("--real", action="store_true", help="traffic windows, every module, reference algorithms")
    ap.add_argument("--noop", action="store_true", help="with --real: no-op algorithms")
    ap.add_argument("--upload", action="store_true", help="with --real: upload batches to a private broker")
    ap.add_argument("--sync-upload", action="store_true",
                    help="with --real --upload: each job waits for its batches' acks (no upload thread)")
    ap.add_argument("--sim-s", type=float, default=120.0, help="with --real: simulated seconds of traffic")
    ap.add_argument("--breakdown", action="store_true", help="with --real: worker CPU per job phase, per run")
    ap.add_argument("--no-memo", action="store_true", help="with --real: without the hourly memo (store.memo)")
    ap.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE,
                    help="with --real: stations per RQ job (scheduling's group_size; 1: a job per station)")
    ap.add_argument("--linger-ms", type=float, default=None,
                    help="with --real: how long an ended run waits to share its write (workers.group.WRITE_LINGER_S)")
    ap.add_argument("--profile", help="with --real: cProfile of the last run (steady state) to this file")
    ap.add_argument("--redis-cluster", type=int, default=0, metavar="N",
                    help="with --real: state on a private Redis Cluster of N masters, the queue on a plain Redis")
    args = ap.parse_args(argv)
    if args.real:
        main_real(args)
        return

    server = start_redis()
    try:
        import redis

        r = redis.Redis.from_url(server.url)
        cat = job_catalogue()
        ctx = wctx.WorkerContext.build(r, cat, algorithms={m: noop for m in cat.local_modules()})
        ctx.uploader = None
        wctx.install(ctx)
        stations = _stations(args.stations)
        seed_windows(ctx, stations)
        bare, ours, cpu_bare, cpu_ours = [], [], [], []
        for i in range(args.repeat):
            bare.append(bench_bare(r, args.stations, cpu_bare))
            ours.append(bench_station_jobs(ctx, stations, args.batch, i, cpu_ours))
        b, o = statistics.median(bare), statistics.median(ours)
        pairs = [y / x for x, y in zip(bare, ours, strict=True)]
        cb, co = statistics.median(cpu_bare), statistics.median(cpu_ours)
        print(f"worker class SimpleWorker, JSON serializer, {args.stations} jobs x {args.repeat} runs (median)")
        print(f"  bare RQ trivial jobs:  {b:8.0f} jobs/s")
        print(f"  station jobs ({len(MODULES)} modules, no-op algorithms): {o:8.0f} jobs/s"
              f"  = {o / b:.2f} x bare RQ  ({o * len(MODULES):.0f} module runs/s)")
        # on a shared machine the wall ratio moves with the neighbours' load: show its spread
        # and the worker process's own CPU per job (the time other processes take is not in it)
        print(f"  ratio per run (station / bare of the same run): {min(pairs):.2f}-{max(pairs):.2f}; "
              f"worker CPU ms/job: bare {cb:.2f}, station {co:.2f} ({cb / co:.2f} x)")
        rt = round_trips_per_job(ctx, stations, args.batch, args.repeat)
        print(f"  Redis round trips per station job: {rt:.2f} (take + replay check, windows read, one write per "
              f"wave of modules that ended together, one per completed batch)")
        lat = bench_latency(ctx, stations, args.batch, args.latency_batches, args.interval_ms)
        print(f"batch completion latency ({len(lat)} batches of {args.batch} stations, one every "
              f"{args.interval_ms:.0f} ms, one worker): p50 {pct(lat, 50):.0f} ms, p99 {pct(lat, 99):.0f} ms, "
              f"max {max(lat):.0f} ms")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
