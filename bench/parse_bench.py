"""Parser throughput: messages/s per topic on the samples, next to bare orjson.loads.

    python -m bench.parse_bench [--seconds 0.5]

The ratio column is parse_message time over a bare decode of the same bytes: what the
checks, validation and fan-out cost on top of JSON decoding. Also times a production-sized
realtime push (stations x 168 hours) and building every module's input for one station.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import orjson

from parsers.catalogue import default_catalogue
from parsers.envelopes import parse_message
from parsers.inputs import build_input
from parsers.windows import apply_latest, hour_key, make_item, upsert_device, upsert_global, upsert_hourly


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of `fn`, measured for about `seconds` after a short warm-up."""
    for _ in range(3):
        fn()
    n, start = 0, time.perf_counter()
    batch = 1
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed
        batch = min(batch * 2, 1024)


def realtime_push(stations: int, hours: int) -> bytes:
    els = []
    for s in range(stations):
        for h in range(hours):
            els.append({
                "stationId": str(1_100_000_000_000_000_000 + s), "hostCode": "52000000000631",
                "sendTime": hour_key(490_000 + h),
                "gunPower": {"gunNo": ["01", "02", "03", "04"], "outputPowerPerGunAvg": [41.3, 12.0, 0.0, 7.5],
                             "outputPowerPerGunMax": [118.2, 60.4, 0.0, 20.1]},
                "outputPowerPerStationAvg": 60.8, "outputPowerPerStationMax": 198.7,
            })
    return orjson.dumps({"realTimeData": els})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="measuring time per row")
    args = ap.parse_args()
    cat = default_catalogue()
    samples = Path(str(resources.files("stationflow").joinpath("samples")))

    print(f"{'topic':<38} {'bytes':>7} {'records':>7} {'msg/s':>10} {'orjson msg/s':>12} {'ratio':>6}")
    windows: dict[str | None, dict] = {}
    for path in sorted(samples.glob("*.json")):
        spec = cat.topic(path.stem)
        value = path.read_bytes()
        res = parse_message(spec, value)
        r_parse = rate(lambda: parse_message(spec, value), args.seconds)  # noqa: B023
        r_json = rate(lambda: orjson.loads(value), args.seconds)  # noqa: B023
        print(f"{spec.topic:<38} {len(value):>7} {len(res.records):>7} {r_parse:>10,.0f} {r_json:>12,.0f} "
              f"{r_json / r_parse:>5.1f}x")
        for r in res.records:  # keep windows for the input-building rows below
            w = windows.setdefault(r.station_id, {})
            it = make_item(1_763_524_800_000, f"{spec.topic}:0:1", r.payload)
            if r.op == "latest":
                w[r.alias] = apply_latest(w.get(r.alias), it)
            elif r.op == "hourly":
                w[r.alias], _ = upsert_hourly(w.get(r.alias, {}), r.key, it, spec.window_size)
            elif r.op == "devices":
                w[r.alias] = upsert_device(w.get(r.alias, {}), r.key, it, spec.window_size)
            elif r.op == "global":
                w[r.alias], _ = upsert_global(w.get(r.alias, {}), r.key, it, spec.window_size)

    spec = cat.topic("station_realtime_data")
    for stations, hours in ((1, 168), (100, 24), (100, 168)):
        value = realtime_push(stations, hours)
        t0 = time.perf_counter()
        res = parse_message(spec, value)
        dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        orjson.loads(value)
        dj = time.perf_counter() - t0
        print(f"realtime push {stations:>3} stations x {hours:>3} h: {len(value) / 2**20:6.2f} MiB, "
              f"{len(res.records):>6} records in {dt * 1000:7.1f} ms ({len(res.records) / dt:,.0f} elements/s, "
              f"{len(value) / 2**20 / dt:5.1f} MiB/s; bare orjson {dj * 1000:.1f} ms)")

    station = "1881540927845654529"
    w = {**windows.get(None, {}), **windows.get(station, {})}
    print(f"\n{'build_input (station with 168 h grid)':<40} {'inputs/s':>10} {'bytes':>7}")
    for m in cat.order:
        now = 1_763_524_805_000
        x = build_input(cat, m, station, w, now)
        r_in = rate(lambda: build_input(cat, m, station, w, now), args.seconds)  # noqa: B023
        print(f"{m:<40} {r_in:>10,.0f} {len(json.dumps(x)):>7}")


if __name__ == "__main__":
    main()
