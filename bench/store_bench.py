"""Window-store write throughput against bare Redis baselines, on a private redis-server.

    python -m bench.store_bench [--stations 200] [--messages 20000] [--poll 500] [--repeat 3]

Same parsed records, same run, same server, each variant on an emptied database:
- `store.apply`: the idempotent writer (one round trip per poll, Lua calls of up to 200
  records covering whole stations: offset high-water marks, newest-record-wins, caps, TTLs,
  orders, registry, counters); `cluster=True`: the same with one Lua call per station;
- `grouped RPUSH+LTRIM`: the best non-idempotent layout, one RPUSH of all of a key's items
  of the poll plus one LTRIM per (station, alias), pipelined per poll;
- `raw RPUSH`: one RPUSH per record, pipelined per poll (no cap, no TTL, no idempotency).
Items are msgpack-encoded inside every timed loop. Also reported: replaying the same polls
(all skipped), and Redis bytes per stored record against the payload size.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import orjson

from parsers.catalogue import default_catalogue
from parsers.envelopes import parse_message
from parsers.records import Record, Source
from stationflow.local import start_redis
from stationflow.traffic import Traffic
from store.codec import encode_item
from store.keys import Keys
from store.windows import WindowStore

HOT_TOPICS = ("car_order", "device_host_dcdc", "device_host_acdc", "device_storage", "device_gun", "device_meter")
START_MS = 1_763_524_800_000


def iter_polls(stations: int, messages: int, poll: int, partitions: int = 4,
               topics: tuple[str, ...] | None = HOT_TOPICS) -> Iterator[list[tuple[Source, list[Record]]]]:
    """Parsed polls of `Traffic` (all input topics when `topics` is None), one at a time."""
    traffic = Traffic(stations=stations, seed=1, start_ms=START_MS, topics=topics)
    return polls_of(islice(traffic.messages(), messages), poll, partitions)


def polls_of(messages: Iterable[Any], poll: int, partitions: int = 4) -> Iterator[list[tuple[Source, list[Record]]]]:
    """Traffic messages (any catalogue's topic names) parsed into polls of `poll` messages."""
    cat = default_catalogue()
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    msgs: list[tuple[Source, list[Record]]] = []
    for i, m in enumerate(messages):
        p = i % partitions
        off = offsets[(m.topic, p)]
        offsets[(m.topic, p)] += 1
        spec = cat.topic(m.topic.rsplit("-", 1)[0]) if m.topic not in cat.by_topic else cat.topic(m.topic)
        res = parse_message(spec, m.value)
        msgs.append((Source(spec.topic, p, off, m.timestamp_ms), res.records))
        if len(msgs) == poll:
            yield msgs
            msgs = []
    if msgs:
        yield msgs


def build_polls(stations: int, messages: int, poll: int, partitions: int = 4,
                topics: tuple[str, ...] | None = HOT_TOPICS) -> list[list[tuple[Source, list[Record]]]]:
    return list(iter_polls(stations, messages, poll, partitions, topics))


def run_store(r: Any, polls: list, replay: bool = False, **opts: Any) -> float:
    ws = WindowStore(r, default_catalogue(), **opts)
    t = time.perf_counter()
    for poll in polls:
        ws.apply(poll, poll[-1][0].timestamp_ms)
    ws.flush_counters()
    if not replay:
        return time.perf_counter() - t
    t = time.perf_counter()
    for poll in polls:
        ws.apply(poll, poll[-1][0].timestamp_ms)
    return time.perf_counter() - t


def run_grouped(r: Any, polls: list) -> float:
    cat = default_catalogue()
    k = Keys("bench")
    t = time.perf_counter()
    for poll in polls:
        groups: dict[str, list[bytes]] = defaultdict(list)
        caps: dict[str, int] = {}
        for src, records in poll:
            coords = src.coords()
            for rec in records:
                key = k.latest(rec.station_id or "g", rec.alias)
                groups[key].append(encode_item(src.timestamp_ms, coords, rec.payload))
                caps[key] = cat.by_alias[rec.alias].window_size
        pipe = r.pipeline(transaction=False)
        for key, items in groups.items():
            pipe.rpush(key, *items)
            pipe.ltrim(key, -caps[key], -1)
        pipe.execute()
    return time.perf_counter() - t


def run_raw(r: Any, polls: list) -> float:
    k = Keys("bench")
    t = time.perf_counter()
    for poll in polls:
        pipe = r.pipeline(transaction=False)
        for src, records in poll:
            coords = src.coords()
            for rec in records:
                pipe.rpush(k.latest(rec.station_id or "g", rec.alias), encode_item(src.timestamp_ms, coords, rec.payload))
        pipe.execute()
    return time.perf_counter() - t


def stored_items(r: Any) -> int:
    """Items the store holds now (latest values, devices, order seconds' orders)."""
    n = 0
    for key in r.scan_iter(match="sf:{*", count=1000):
        ks = key.decode()
        if ks.endswith((":meta", ":ts", ":st", ":cb")):
            continue
        t = r.type(key)
        if t == b"string":
            n += 1
        elif t == b"hash":
            n += r.hlen(key)
        elif t == b"list":
            n += r.llen(key)
        elif t == b"zset":  # closed order seconds: count their orders
            from store.codec import decode_closed_second

            n += sum(len(decode_closed_second(m)["orders"]) for m in r.zrange(key, 0, -1))
    return n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=200)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--poll", type=int, default=500, help="messages per poll (one apply call)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)

    polls = build_polls(a.stations, a.messages, a.poll)
    n_records = sum(len(recs) for poll in polls for _, recs in poll)
    payload_json = [len(orjson.dumps(rec.payload)) for poll in polls for _, recs in poll for rec in recs]
    server = start_redis()
    try:
        r = server.client()
        results: dict[str, list[float]] = defaultdict(list)
        for _ in range(a.repeat):
            for name, fn in (("raw RPUSH", run_raw), ("grouped RPUSH+LTRIM", run_grouped),
                             ("store.apply (idempotent)", run_store),
                             ("store.apply cluster=True", lambda r, p: run_store(r, p, cluster=True))):
                r.flushall()
                results[name].append(fn(r, polls))
            r.flushall()
            results["store.apply replay (all skipped)"].append(run_store(r, polls, replay=True))
        r.flushall()
        base = int(r.info("memory")["used_memory"])
        run_store(r, polls)
        used = int(r.info("memory")["used_memory"]) - base
        items = stored_items(r)
        print(f"store_bench: {len(polls)} polls x {a.poll} messages, {n_records} records, "
              f"{a.stations} stations, topics {', '.join(HOT_TOPICS)}; best of {a.repeat}")
        grouped = a.messages and n_records / min(results["grouped RPUSH+LTRIM"])
        print(f"{'variant':36} {'records/s':>12} {'vs grouped':>11}")
        for name, times in results.items():
            rate = n_records / min(times)
            print(f"{name:36} {rate:12,.0f} {rate / grouped:10.0%}  (median {n_records / statistics.median(times):,.0f})")
        mean_json = sum(payload_json) / len(payload_json)
        print(f"stored items {items}, Redis used_memory +{used:,} B -> {used / max(items, 1):,.0f} B per stored "
              f"record; mean payload {mean_json:,.0f} B as JSON "
              f"(ratio {used / max(items, 1) / mean_json:.2f})")
    finally:
        server.close()


if __name__ == "__main__":
    main()
