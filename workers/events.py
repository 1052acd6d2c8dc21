"""Per-process counts and timings of the station jobs, the sweeper and the uploader.

The workers only report what happened; whoever runs them decides what to do with it. The
Prometheus families live in `stationflow.metrics`, above the workers in the import order,
so `stationflow.runtime` subscribes an observer here (as it does on `ingest.stats` for the
ingester). Without observers an event costs one empty loop.

Counts (labels):
- `jobs` (outcome): station jobs finished, one per station of a group job: ok, empty, failed
- `runs` (module, outcome): module runs: ok, none, failed:<reason>
- `batches` (module, outcome): uploaded, skipped, expired, ...
- `batch_stations` (module, status): station reports of finished batches
- `upload_errors` (module): failed uploads (retried)
- `runs_released` (module): runs deferred by `min_interval_s`, made pending once it passed
- `result_fixups` (module, kind): corrections `store.tracker.normalise_result` made to a
  result: non_finite, station_id_mismatch, wrapped (`count_fixups`)

Samples, in seconds (labels):
- `job_seconds` (): wall time of one RQ job (the stations of a group together)
- `algorithm_seconds` (module): time inside one algorithm call
- `batch_seconds` (module): batch creation to completion or expiry

The Redis counter hashes (`store.counters`) are separate: they are shared by every process
and written by the store scripts.
"""

from __future__ import annotations

from collections.abc import Callable

COUNTS = frozenset({"jobs", "runs", "batches", "batch_stations", "upload_errors", "result_fixups",
                    "runs_released"})
SAMPLES = frozenset({"job_seconds", "algorithm_seconds", "batch_seconds"})

#: counter(name, n, labels); sampler(name, value, labels)
CountObserver = Callable[[str, int, dict[str, str]], None]
SampleObserver = Callable[[str, float, dict[str, str]], None]


class WorkerEvents:
    """The observers of one process. Unknown event names raise ValueError: a typo must fail
    the tests, not vanish from the metrics."""

    def __init__(self) -> None:
        self.counters: list[CountObserver] = []
        self.samplers: list[SampleObserver] = []

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        if name not in COUNTS:
            raise ValueError(f"unknown worker count {name!r}; known: {', '.join(sorted(COUNTS))}")
        for obs in self.counters:
            obs(name, n, labels)

    def sample(self, name: str, value: float, **labels: str) -> None:
        if name not in SAMPLES:
            raise ValueError(f"unknown worker sample {name!r}; known: {', '.join(sorted(SAMPLES))}")
        for obs in self.samplers:
            obs(name, value, labels)


#: the process's observers (station jobs run in whatever process RQ calls them in)
EVENTS = WorkerEvents()
count = EVENTS.count
sample = EVENTS.sample


def count_fixups(module: str, nonfinite: int, mismatch: bool, wrapped: bool) -> None:
    """Count the corrections `store.tracker.normalise_result` made to one module result."""
    for kind, n in (("non_finite", nonfinite), ("station_id_mismatch", int(mismatch)), ("wrapped", int(wrapped))):
        if n:
            count("result_fixups", n, module=module, kind=kind)
