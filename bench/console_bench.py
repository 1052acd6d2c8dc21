"""Server time of the console's station page with full windows, and its Redis round trips.

One station is filled the way production fills it (generated traffic through the real parser
and WindowStore.apply: 168 realtime hours, devices, tariff, orders) plus 24 kept outputs of
every module (load predictions spread over the last day, so the forecast chart overlays real
hours) and 180 open batches that expect it. The page is then requested in-process through the console's ASGI app (routing, Redis
reads, charts, Jinja2 rendering; no socket and no browser), `runs` times each for the HTML page
and its JSON twin. Wall time moves with the neighbours' load on a shared machine, so the
process CPU time per request is reported beside it; round trips are counted at the connection
(one per command or pipeline).

    python -m bench.console_bench [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

STATION_COUNT = 1
#: open batches that expect the station (the page lists the station's batches)
BATCHES = 180


def fill(r: Any, now_ms: int) -> str:
    """Write one fully equipped station; returns its id."""
    from parsers.catalogue import default_catalogue
    from parsers.envelopes import parse_message
    from parsers.records import Source
    from stationflow.traffic import Traffic
    from store.windows import WindowStore

    cat = default_catalogue()
    store = WindowStore(r, cat, "sf")
    t0 = now_ms - 120_000
    traffic = Traffic(stations=STATION_COUNT, seed=3, start_ms=t0)
    offsets: dict[str, int] = {}
    messages = []
    for m in traffic.messages(until_ms=t0 + 110_000):
        o = offsets[m.topic] = offsets.get(m.topic, -1) + 1
        messages.append((Source(m.topic, 0, o, m.timestamp_ms), parse_message(cat.by_topic[m.topic], m.value).records))
    store.apply(messages, now_ms)
    store.close_expired_orders(now_ms + 10_000)
    station = traffic.stations[0].id
    for k in range(24):  # oldest first: the list keeps the newest first
        ts = now_ms - (23 - k) * 3_600_000
        hour = time.gmtime(ts / 1000).tm_hour
        store.store_output(station, "load_prediction", {"station_id": station, "start_hour": (hour + 1) % 24,
                                                        "prediction": [100.0 + i for i in range(24)]}, ts, keep=24)
        for m in cat.modules:
            if m.name != "load_prediction":
                store.store_output(station, m.name, {"station_id": station, "value": k, "curve": [0.5] * 48},
                                   ts, keep=24)
    from store.tracker import BatchTracker, NewBatch

    BatchTracker(r, "sf").create([NewBatch(f"{m.name}:SCHEDULE-DEVICE-GUN:0:{i}", m.name, (station,), 30.0)
                                  for i in range(BATCHES // len(cat.modules)) for m in cat.modules], now_ms)
    return station


async def _request(app: Any, path: str) -> tuple[int, int]:
    """One GET through the ASGI app; returns (status, body bytes)."""
    out: dict[str, Any] = {"status": 0, "body": 0}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] += len(message.get("body", b""))

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1:8430")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8430)}
    await app(scope, receive, send)
    return out["status"], out["body"]


class _NoSampler:
    def lag(self) -> tuple[None, str]:
        return None, "not sampled in the bench"

    def history(self) -> dict[str, Any]:
        return {"t": [], "topics": {}, "every_s": None}


def measure(r: Any, runs: int = 20) -> dict[str, Any]:
    """Median/min/max ms of the station page (HTML and JSON) and the round trips of one request."""
    from redis.connection import AbstractConnection

    from stationflow.console.web import ConsoleConfig, build_app
    from stationflow.settings import Settings

    settings = Settings.load(env={})
    station = fill(r, int(time.time() * 1000))
    app = build_app(ConsoleConfig(settings), r, _NoSampler())  # type: ignore[arg-type]
    calls = {"n": 0}
    real = AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        calls["n"] += 1
        real(self, command, check_health)

    out: dict[str, Any] = {"station": station, "runs": runs,
                           "realtime_hours": r.hlen(f"sf:{{{station}}}:h:station_realtime_data")}
    loop = asyncio.new_event_loop()
    try:
        for name, path in (("html", f"/station/{station}"), ("json", f"/api/station/{station}")):
            loop.run_until_complete(_request(app, path))  # warm: templates compiled, scripts loaded
            ms, cpu = [], []
            for _ in range(runs):
                t0, c0 = time.perf_counter(), time.process_time()
                status, size = loop.run_until_complete(_request(app, path))
                ms.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
                assert status == 200, (path, status)
            AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
            try:
                calls["n"] = 0
                loop.run_until_complete(_request(app, path))
            finally:
                AbstractConnection.send_packed_command = real  # type: ignore[method-assign]
            out[name] = {"median_ms": round(statistics.median(ms), 2), "min_ms": round(min(ms), 2),
                         "max_ms": round(max(ms), 2), "values": [round(x, 2) for x in ms], "bytes": size,
                         "cpu_ms_median": round(statistics.median(cpu), 2),
                         "round_trips": calls["n"]}
    finally:
        loop.close()
    return out


def main() -> None:
    from stationflow.local import start_redis

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    with start_redis() as server:
        print(json.dumps(measure(server.client(), args.runs), indent=1))


if __name__ == "__main__":
    main()
