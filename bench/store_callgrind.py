"""Redis-side instructions per record of the window writer, counted by callgrind.

    python -m bench.store_callgrind [--topics car_order,device_host_dcdc] [--messages 20000]

Wall-clock ratios on a shared 2-core machine move by +-20% from run to run; instruction
counts do not. This runs a private redis-server under `valgrind --tool=callgrind` with
instrumentation switched on only while the measured commands run, and reports the server's
instructions per record for: the grouped RPUSH+LTRIM baseline, and `store.apply`'s script
calls (captured from a normal run, then replayed on an empty server). Use it to judge a change
to `store/lua/apply.lua` before timing it. Needs valgrind (Debian: `apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from importlib import resources
from typing import Any

import redis

import store.poll_write as pw
import store.windows as sw
from bench.store_bench import HOT_TOPICS, build_polls
from parsers.catalogue import default_catalogue
from stationflow.local import find_redis_server, free_port, start_redis
from store.codec import encode_item
from store.keys import Keys


def _capture_apply(polls: list) -> tuple[str, list[list[tuple[Any, ...]]]]:
    """Run store.apply once on a private server, keeping each poll's EVALSHA commands."""
    captured: list[list[tuple[Any, ...]]] = []
    real = pw.run_streamed  # what PollWrite.run sends a poll with on one Redis

    def keep(r: Any, cmds: Iterable[tuple[Any, ...]], *args: Any) -> list[Any]:
        cmds = list(cmds)
        captured.append([c for c in cmds if c[0] == "EVALSHA"])
        return real(r, iter(cmds), *args)

    server = start_redis()
    pw.run_streamed = keep  # type: ignore[assignment]
    try:
        ws = sw.WindowStore(server.client(), default_catalogue())
        for poll in polls:
            ws.apply(poll, poll[-1][0].timestamp_ms)
        return ws.scripts["apply.lua"].body, captured
    finally:
        pw.run_streamed = real  # type: ignore[assignment]
        server.close()


def _grouped_commands(polls: list) -> Iterator[list[tuple[Any, ...]]]:
    cat = default_catalogue()
    k = Keys("bench")
    for poll in polls:
        groups: dict[str, list[bytes]] = {}
        caps: dict[str, int] = {}
        for src, records in poll:
            coords = src.coords()
            for rec in records:
                key = k.latest(rec.station_id or "g", rec.alias)
                groups.setdefault(key, []).append(encode_item(src.timestamp_ms, coords, rec.payload))
                caps[key] = cat.by_alias[rec.alias].window_size
        cmds: list[tuple[Any, ...]] = []
        for key, items in groups.items():
            cmds.append(("RPUSH", key, *items))
            cmds.append(("LTRIM", key, -caps[key], -1))
        yield cmds


def count_instructions(batches: Iterable[list[tuple[Any, ...]]], script: str | None = None,
                       keep: str | None = None) -> int:
    """Server instructions spent running `batches` (one pipeline each) on a fresh server."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="sf-callgrind-")
    out = os.path.join(workdir, "callgrind.out")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=port)
        for _ in range(300):
            try:
                r.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.1)
        sha = r.script_load(script) if script is not None else None
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
        for cmds in batches:
            pipe = r.pipeline(transaction=False)
            for c in cmds:
                if c[0] == "EVALSHA":
                    pipe.execute_command("EVALSHA", sha, *c[2:])
                else:
                    pipe.execute_command(*c)
            pipe.execute()
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    try:
        with open(out) as f:
            m = re.search(r"^totals:\s+(\d+)", f.read(), re.M)
        if keep:
            shutil.copyfile(out, keep)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not m:
        raise RuntimeError("callgrind wrote no totals")
    return int(m.group(1))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topics", default=",".join(HOT_TOPICS), help="comma-separated aliases (default: the hot mix)")
    ap.add_argument("--stations", type=int, default=200)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--poll", type=int, default=500)
    ap.add_argument("--script", help="an apply.lua variant to count instead of the shipped one (common.lua is "
                                     "prepended)")
    ap.add_argument("--keep", metavar="FILE", help="also save the script run's callgrind output to FILE "
                                                   "(read it with callgrind_annotate)")
    a = ap.parse_args(argv)
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind not found: apt-get install -y valgrind")
    topics = tuple(t for t in a.topics.split(",") if t)
    polls = build_polls(a.stations, a.messages, a.poll, topics=topics)
    n = sum(len(recs) for poll in polls for _, recs in poll)
    body, calls = _capture_apply(polls)
    if a.script:
        common = (resources.files("store") / "lua" / "common.lua").read_text()
        with open(a.script) as f:
            body = common + "\n" + f.read()
    grouped = count_instructions(_grouped_commands(polls)) / n
    store = count_instructions(calls, body, keep=a.keep) / n
    print(f"store_callgrind: {n} records of {', '.join(topics)}; Redis server instructions per record")
    print(f"{'grouped RPUSH+LTRIM':28} {grouped:12,.0f}")
    print(f"{'store.apply (Lua)':28} {store:12,.0f}  ({store / grouped:.1f}x the baseline)")


if __name__ == "__main__":
    main()
