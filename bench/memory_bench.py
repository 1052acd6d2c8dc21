"""Redis memory of the window store: bytes per stored record, and a fleet-size estimate.

    python -m bench.memory_bench [--stations 1000] [--sim-seconds 75]

`stationflow.traffic` for all 13 input topics (the first messages carry each station's
initial state: parameters, 168 hours of realtime history, calendar, prices, weather) is
parsed and applied with `store.apply` on an empty private redis-server until the windows
reach their steady size: `latest`/`devices`/`hourly` fill at once, `orders` keep what their
retention (60 s) allows, so ~75 simulated seconds are enough. Then:
- bytes per stored record = used_memory growth / items the store holds (store_bench's
  count), beside the mean payload of the applied records as JSON;
- Redis total for 10,000 stations = the measured per-station growth x 10,000: an
  extrapolation from the measured fleet (global windows such as the calendar are shared and
  counted once per measured fleet, so the estimate is slightly high).
Windows only: RQ queues, batches, outputs and dead letters come on top (the end-to-end
report gives used_memory after a run with all of them).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson

from bench.store_bench import iter_polls, stored_items
from parsers.catalogue import default_catalogue
from store.windows import WindowStore

#: messages per station per simulated second at natural rates (measured: ~4.9 for 1,000 stations)
NATURAL_PER_STATION_S = 4.9
FLEET = 10_000


def measure(r: Any, stations: int, sim_seconds: float = 75, poll: int = 500) -> dict[str, Any]:
    """Fill the windows of `stations` on the (emptied) Redis behind `r` and measure them."""
    r.flushall()
    base = int(r.info("memory")["used_memory"])
    ws = WindowStore(r, default_catalogue())
    messages = int(stations * NATURAL_PER_STATION_S * sim_seconds) + stations
    applied, payload_bytes, n_msgs = 0, 0, 0
    first_ts = last_ts = None
    t0 = time.perf_counter()
    for batch in iter_polls(stations, messages, poll, topics=None):
        last_ts = batch[-1][0].timestamp_ms
        first_ts = first_ts or batch[0][0].timestamp_ms
        ws.apply(batch, last_ts)
        n_msgs += len(batch)
        for _src, records in batch:
            applied += len(records)
            payload_bytes += sum(len(orjson.dumps(rec.payload)) for rec in records)
    ws.flush_counters()
    elapsed = time.perf_counter() - t0
    used = int(r.info("memory")["used_memory"]) - base
    items = stored_items(r)
    per_station = used / stations
    return {
        "stations": stations, "messages": n_msgs, "records_applied": applied,
        "simulated_s": ((last_ts or 0) - (first_ts or 0)) / 1000, "seconds": elapsed,
        "stored_items": items, "used_memory_growth": used,
        "bytes_per_stored_record": used / max(items, 1),
        "mean_payload_json_bytes": payload_bytes / max(applied, 1),
        "ratio_stored_to_payload": (used / max(items, 1)) / (payload_bytes / max(applied, 1)),
        "bytes_per_station": per_station,
        "fleet": FLEET, "fleet_bytes_extrapolated": per_station * FLEET,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=1000)
    ap.add_argument("--sim-seconds", type=float, default=75)
    a = ap.parse_args()
    from stationflow.local import start_redis

    server = start_redis()
    try:
        m = measure(server.client(), a.stations, a.sim_seconds)
    finally:
        server.stop()
    print(f"{m['stations']} stations, {m['messages']} messages ({m['simulated_s']:.0f} simulated s) in "
          f"{m['seconds']:.1f} s: {m['stored_items']} stored items, used_memory +{m['used_memory_growth']:,} B")
    print(f"  {m['bytes_per_stored_record']:,.0f} B per stored record vs {m['mean_payload_json_bytes']:,.0f} B "
          f"mean JSON payload (x{m['ratio_stored_to_payload']:.2f})")
    print(f"  {m['bytes_per_station'] / 1e6:.2f} MB per station -> {m['fleet_bytes_extrapolated'] / 1e9:.2f} GB "
          f"for {m['fleet']:,} stations (extrapolated from {m['stations']:,} measured)")


if __name__ == "__main__":
    main()
