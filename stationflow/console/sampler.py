"""The console's own sampling: per-topic counters every few seconds, turned into rates.

Counters only grow, so a rate needs two readings; the console keeps its own ring of readings
(the last `keep_s` seconds) instead of writing anything to Redis. Consumer lag costs two
Kafka admin requests, so it is refreshed here too, off the request path: a page never waits
for a broker that is down, it shows the last lag and why the newest lookup failed.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

log = logging.getLogger("stationflow.console")

Lag = dict[str, dict[int, dict[str, int | None]]]


class Sampler(threading.Thread):
    """Reads `(ms, {topic: {messages, records}})` every `every_s` seconds until `stop()`."""

    def __init__(self, settings: Any, r: Any, every_s: float = 5.0, keep_s: float = 600.0,
                 lag: bool = True) -> None:
        super().__init__(name="console-sampler", daemon=True)
        self.settings, self.r, self.every_s, self.want_lag = settings, r, every_s, lag
        self.readings: deque[tuple[int, dict[str, dict[str, int]]]] = deque(maxlen=max(2, int(keep_s / every_s) + 1))
        self._lag: Lag | None = None
        self._lag_error: str | None = None if lag else "lag lookup disabled (--no-lag)"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.failing = False  # the last reading failed (logged once per outage)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            self.sample_once()
            self._stop.wait(self.every_s)

    def sample_once(self) -> None:
        """One reading (one SCAN walk of the counter keys and one pipeline); a failure is logged
        and leaves a gap, the console goes on."""
        from stationflow.status import consumer_lag, gather

        try:
            snap = gather(self.r, self.settings.prefix, self.settings.queue.name, workers=False)
            reading = {g[6:]: {"messages": c.get("messages", 0), "records": c.get("records", 0)}
                       for g, c in snap.counters.items() if g.startswith("topic:")}
            with self._lock:
                self.readings.append((snap.taken_ms, reading))
            if self.failing:
                log.warning("console sampler: reading the counters again")
            self.failing = False
        except Exception as e:  # noqa: BLE001 - a Redis outage must not end the sampler
            if not self.failing:  # once per outage, not every few seconds
                log.error("console sampler: cannot read counters: %s: %s", type(e).__name__, e)
            self.failing = True
        if not self.want_lag:
            return
        topics = [t.topic for t in self.settings.catalogue.consumed_topics()]
        try:
            lag = consumer_lag(self.settings.kafka.admin_config(), self.settings.kafka.group_id, topics)
            with self._lock:
                self._lag, self._lag_error = lag, None
        except Exception as e:  # noqa: BLE001 - the page shows why the lag is missing
            with self._lock:
                self._lag_error = f"{type(e).__name__}: {e}"

    def lag(self) -> tuple[Lag | None, str | None]:
        with self._lock:
            return self._lag, self._lag_error

    def history(self) -> dict[str, Any]:
        """Per-topic messages/s and records/s between consecutive readings:
        {"t": [unix s...], "topics": {topic: {"messages": [...], "records": [...]}}}."""
        with self._lock:
            readings = list(self.readings)
        return rates_from(readings)


def rates_from(readings: list[tuple[int, dict[str, dict[str, int]]]]) -> dict[str, Any]:
    """Rates between consecutive readings (pure, for the tests and the sampler)."""
    ts: list[float] = []
    topics: dict[str, dict[str, list[float | None]]] = {}
    names = sorted({t for _, rd in readings for t in rd})
    for name in names:
        topics[name] = {"messages": [], "records": []}
    for (t0, a), (t1, b) in zip(readings, readings[1:], strict=False):
        dt = max((t1 - t0) / 1000, 1e-9)
        ts.append(round(t1 / 1000, 3))
        for name in names:
            for f in ("messages", "records"):
                if name in a and name in b:
                    topics[name][f].append(round(max(0, b[name][f] - a[name][f]) / dt, 2))
                else:
                    topics[name][f].append(None)
    return {"t": ts, "topics": topics, "every_s": None if len(readings) < 2 else
            round((readings[-1][0] - readings[0][0]) / 1000 / (len(readings) - 1), 2)}

