"""One Redis against a Redis Cluster of N masters: the ingester's write path, Redis CPU per
record per master, and the key/slot balance at fleet scale.

    python -m bench.cluster_bench [--masters 3] [--stations 200] [--messages 12000] [--poll 500]
    stationflow bench --redis-cluster 3

Same parsed polls (bench.store_bench: Traffic of the hot topics), written with `store.apply`
(what the ingester does per poll) into an emptied private redis-server, then into an emptied
private cluster (no replicas: replication is its own cost and the same per record on both).
Redis CPU is `used_cpu_user + used_cpu_sys` of each server before and after (INFO CPU), per
record applied; the cluster's is given per master. The balance run registers `--balance`
stations (car orders and DCDC readings, about four messages each), adds one dead letter and
one running station job per station (the dead-letter and running-index buckets) and
reports keys and Redis CPU per master: busiest over mean. On a machine with fewer cores than masters + client the cluster cannot be faster:
the per-core figures are the ones that carry to a real deployment (one master per core).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.store_bench import build_polls
from parsers.catalogue import default_catalogue
from stationflow.local import start_redis
from stationflow.local_cluster import start_cluster
from store.windows import WindowStore

#: messages a station sends per second at the fleet's natural rate (docs/operations.md)
STATION_RATE = 6.4


def _cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _write(r: Any, polls: list, servers: list[Any]) -> dict[str, Any]:
    """Apply every poll; wall time, records and Redis CPU seconds per server."""
    clients = [s.client() for s in servers]
    before = [_cpu(c) for c in clients]
    ws = WindowStore(r, default_catalogue())
    t = time.perf_counter()
    for poll in polls:
        ws.apply(poll, poll[-1][0].timestamp_ms)
    ws.flush_counters()
    wall = time.perf_counter() - t
    cpu = [_cpu(c) - b for c, b in zip(clients, before, strict=True)]
    keys = [int(c.dbsize()) for c in clients]
    for c in clients:
        c.close()
    return {"wall_s": wall, "cpu_s": cpu, "keys": keys}


def _records_per_master(rc: Any, polls: list, masters: list[Any]) -> list[int]:
    """Records each master stores (a record goes to its station's slot; global ones to their alias's)."""
    from store.keys import Keys

    k = Keys()
    ports = [m.port for m in masters]
    owner = {slot: nodes[0].port for slot, nodes in rc.nodes_manager.slots_cache.items()}
    out = [0] * len(masters)
    for poll in polls:
        for _, recs in poll:
            for rec in recs:
                key = k.meta(rec.station_id) if rec.station_id is not None else k.global_meta(rec.alias)
                out[ports.index(owner[rc.keyslot(key)])] += 1
    return out


def _balance_polls(stations: int) -> list:
    """Per-station traffic (car orders and DCDC readings), about four messages per station."""
    return build_polls(stations, 4 * stations, 500, topics=("car_order", "device_host_dcdc"))


def _index_writes(rc: Any, stations: list[str], chunk: int = 500) -> None:
    """What the global indexes take besides the windows, per station: one dead letter (its
    bucket by origin, over 16 partitions) and one station job indexed as running, then done."""
    from store.dlq import DeadLetter, DeadLetters
    from store.pending import PendingRuns
    from store.scripts import ScriptPipeline

    dl, runs = DeadLetters(rc), PendingRuns(rc)
    now = int(time.time() * 1000)
    for i in range(0, len(stations), chunk):
        part = stations[i:i + chunk]
        dl.add([DeadLetter("SCHEDULE-DEVICE-METER", n % 16, n, now, "bad_json", "bench", b"{")
                for n in range(i, i + len(part))])
        take = ScriptPipeline(rc)
        for s in part:
            runs.queue_take(take, s, f"job-{s}", now)
        take.execute()
        done = rc.pipeline(transaction=False)
        for s in part:
            runs.queue_done(done, s, f"job-{s}")
        done.execute()


def _index_keys_per_master(rc: Any, masters: list[Any]) -> list[int]:
    """Bucket keys of the dead-letter and running indexes each master serves."""
    from store.keys import keys_for

    k = keys_for(rc)
    ports = [m.port for m in masters]
    owner = {slot: nodes[0].port for slot, nodes in rc.nodes_manager.slots_cache.items()}
    keys = [key for i in range(k.buckets) for key in k.dlq_bucket_keys(i)] + k.running_all()[1:]
    out = [0] * len(masters)
    for key in keys:
        out[ports.index(owner[rc.keyslot(key)])] += 1
    return out


def _balance(rc: Any, cluster: Any, stations: int) -> dict[str, Any]:
    """Keys and Redis CPU per master after the balance traffic and the index writes."""
    masters = cluster.masters()
    clients = [m.client() for m in masters]
    before = [_cpu(c) for c in clients]
    polls = _balance_polls(stations)
    ws = WindowStore(rc, default_catalogue())
    for poll in polls:
        ws.apply(poll, poll[-1][0].timestamp_ms)
    ws.flush_counters()
    ids = sorted({rec.station_id for p in polls for _, recs in p for rec in recs if rec.station_id is not None})
    _index_writes(rc, ids)
    cpu = [_cpu(c) - b for c, b in zip(clients, before, strict=True)]
    keys = [int(c.dbsize()) for c in clients]
    for c in clients:
        c.close()
    mean_keys, mean_cpu = sum(keys) / len(masters), sum(cpu) / len(masters)
    return {"stations": stations, "keys_per_master": keys, "busiest_over_mean_keys": max(keys) / mean_keys,
            "cpu_s_per_master": cpu, "busiest_over_mean_cpu": max(cpu) / mean_cpu if mean_cpu else None,
            "index_bucket_keys_per_master": _index_keys_per_master(rc, masters)}


def run(masters: int = 3, stations: int = 200, messages: int = 12_000, poll: int = 500, repeat: int = 3,
        balance_stations: int = 10_000, log: Any = print) -> dict[str, Any]:
    polls = build_polls(stations, messages, poll)
    n_msgs = sum(len(p) for p in polls)
    n_records = sum(len(recs) for p in polls for _, recs in p)
    single = start_redis()
    cluster = start_cluster(masters=masters, replicas=0)
    out: dict[str, Any] = {"masters": masters, "stations": stations, "messages": n_msgs, "records": n_records,
                           "poll": poll, "repeat": repeat}
    try:
        runs: dict[str, list[dict[str, Any]]] = {"single": [], "cluster": []}
        r1 = single.client()
        rc = cluster.client()
        for i in range(repeat):
            log(f"cluster bench: run {i + 1}/{repeat} (single Redis, then {masters} masters)")
            r1.flushall()
            runs["single"].append(_write(r1, polls, [single]))
            cluster.flushall()
            runs["cluster"].append(_write(rc, polls, cluster.masters()))
        shares = {"single": [n_records], "cluster": _records_per_master(rc, polls, cluster.masters())}
        for name, rs in runs.items():
            rates = [n_msgs / x["wall_s"] for x in rs]
            cpu_per_record = [sum(x["cpu_s"]) / n_records * 1e6 for x in rs]
            out[name] = {
                "messages_per_s": statistics.median(rates), "messages_per_s_min": min(rates),
                "messages_per_s_max": max(rates),
                "redis_cpu_us_per_record": statistics.median(cpu_per_record),
                "records_per_master": shares[name],
                "redis_cpu_us_per_record_per_master": [
                    statistics.median(x["cpu_s"][m] / max(1, shares[name][m]) * 1e6 for x in rs)
                    for m in range(len(rs[0]["cpu_s"]))],
            }
        log(f"cluster bench: balance at {balance_stations} stations")
        cluster.flushall()
        out["balance"] = _balance(rc, cluster, balance_stations)
        # one core of Redis per server, kept at most 70 % busy; a station sends STATION_RATE
        # messages (about one record each) per second
        out["capacity"] = {
            "station_rate_per_s": STATION_RATE,
            "stations_per_single_redis_at_70pct": int(0.7e6 / (out["single"]["redis_cpu_us_per_record"] * STATION_RATE)),
            "stations_per_master_at_70pct": int(0.7e6 / (out["cluster"]["redis_cpu_us_per_record"] * STATION_RATE)),
        }
        r1.close()
        rc.close()
    finally:
        single.close()
        cluster.close()
    return out


def render(rep: dict[str, Any]) -> str:
    s, c, b = rep["single"], rep["cluster"], rep["balance"]
    lines = [
        f"## One Redis vs Redis Cluster ({rep['masters']} masters)",
        "",
        f"store.apply of {rep['messages']:,} messages ({rep['records']:,} records, {rep['stations']} stations, "
        f"{rep['poll']} per poll), median of {rep['repeat']}:",
        "",
        "| | messages/s (min-max) | Redis CPU µs/record (all servers) | per master: records, µs/record |",
        "|---|---|---|---|",
        f"| one Redis | {s['messages_per_s']:,.0f} ({s['messages_per_s_min']:,.0f}-{s['messages_per_s_max']:,.0f}) "
        f"| {s['redis_cpu_us_per_record']:.1f} | - |",
        f"| cluster | {c['messages_per_s']:,.0f} ({c['messages_per_s_min']:,.0f}-{c['messages_per_s_max']:,.0f}) "
        f"| {c['redis_cpu_us_per_record']:.1f} | "
        + "; ".join(f"{n:,}, {x:.1f}" for n, x in zip(c["records_per_master"], c["redis_cpu_us_per_record_per_master"],
                                                      strict=True)) + " |",
        "",
        f"Balance at {b['stations']:,} stations: keys per master {b['keys_per_master']} "
        f"(busiest / mean {b['busiest_over_mean_keys']:.3f}); Redis CPU s per master "
        + ", ".join(f"{x:.2f}" for x in b["cpu_s_per_master"])
        + (f" (busiest / mean {b['busiest_over_mean_cpu']:.3f})" if b["busiest_over_mean_cpu"] else "")
        + f"; with a dead letter and a running job per station, their bucket keys per master "
        f"{b['index_bucket_keys_per_master']}.",
        "",
        f"Capacity at {rep['capacity']['station_rate_per_s']} messages/s per station, one Redis core 70 % busy: "
        f"one Redis ~{rep['capacity']['stations_per_single_redis_at_70pct']:,} stations "
        f"({s['redis_cpu_us_per_record']:.1f} µs/record); one cluster master "
        f"~{rep['capacity']['stations_per_master_at_70pct']:,} stations ({c['redis_cpu_us_per_record']:.1f} µs/record: "
        "one script call per station instead of many stations per call).",
    ]
    return "\n".join(lines) + "\n"


#: (stations, messages, repeat, balance stations) of the comparison per profile
PROFILES = {"smoke": (20, 400, 1, 500), "quick": (100, 6000, 2, 10_000), "full": (200, 20_000, 3, 10_000)}


def run_profile(masters: int, profile: str, out: Path) -> dict[str, Any]:
    """`stationflow bench --redis-cluster N` (through `python -m bench`): run, write cluster.md
    and cluster.json into `out`, print the table."""
    import sys

    stations, messages, repeat, balance = PROFILES[profile]
    rep = run(masters, stations, messages, 500, repeat, balance, log=lambda s: print(s, file=sys.stderr))
    out.mkdir(parents=True, exist_ok=True)
    text = render(rep)
    (out / "cluster.md").write_text(text)
    (out / "cluster.json").write_text(json.dumps(rep, indent=2))
    print(text, end="")
    return rep


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masters", type=int, default=3)
    ap.add_argument("--stations", type=int, default=200)
    ap.add_argument("--messages", type=int, default=12_000)
    ap.add_argument("--poll", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--balance", type=int, default=10_000, help="stations of the balance run")
    ap.add_argument("--out", default=None, help="directory for cluster.md and cluster.json")
    a = ap.parse_args(argv)
    rep = run(a.masters, a.stations, a.messages, a.poll, a.repeat, a.balance)
    text = render(rep)
    print(text)
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "cluster.json").write_text(json.dumps(rep, indent=2))
        (Path(a.out) / "cluster.md").write_text(text)


if __name__ == "__main__":
    main()
