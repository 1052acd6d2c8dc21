"""Ingest counters: one tally feeds the Redis counter hashes, the periodic log summary and
(through an observer) the Prometheus metrics of the process.

Groups and fields (each group is the hash `<prefix>:counters:<group>`):

- `ingest`: polls, messages, records, dead_letters, stamped, commits, commit_errors, pauses,
  resumes (backpressure; paused now while pauses > resumes), store_retries, kafka_retries,
  triggers_fired, triggers_absorbed, triggers_rate_limited, triggers_deferred,
  triggers_not_ready, replays_skipped, hours_ignored,
  late_orders, seconds_evicted, orders_closed_by_timer, runs_planned, triggers_replayed
  (triggers of messages scheduled by an earlier delivery: dropped, store.marks), stale_on_arrival
- `topic:<topic>`: messages, records, dead_letters, dead:<reason>, stamped, replays_skipped
  (the window store writes its own per-topic fields, e.g. stale_on_arrival, to the same hash:
  those reach the observers through `notify` only)
- `triggers`: `<module>:fired`, `<module>:absorbed`, `<module>:rate_limited`,
  `<module>:deferred` (fired runs the rate limit deferred), `<module>:not_ready`; the workers'
  sweepers add `<module>:released` (deferred runs made pending once their interval passed)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

Key = tuple[str, str]  # (group, field)


class IngestStats:
    def __init__(self) -> None:
        self.totals: Counter[Key] = Counter()
        self._unsent: Counter[Key] = Counter()
        self.observers: list[Callable[[str, str, int], None]] = []  # (group, field, n)
        #: (name, value): durations in seconds ("write", "schedule", "commit") and sizes
        #: ("poll_records") for histograms; nothing is kept here, observers decide
        self.samplers: list[Callable[[str, float], None]] = []

    def add(self, group: str, field: str, n: int = 1) -> None:
        if n:
            self.totals[(group, field)] += n
            self._unsent[(group, field)] += n
            for obs in self.observers:
                obs(group, field, n)

    def notify(self, group: str, field: str, n: int) -> None:
        """Tell the observers (metrics) about a count written to Redis by someone else."""
        if n:
            for obs in self.observers:
                obs(group, field, n)

    def sample(self, name: str, value: float) -> None:
        for obs in self.samplers:
            obs(name, value)

    def add_many(self, counts: dict[Key, int]) -> None:
        for (g, f), n in counts.items():
            self.add(g, f, n)

    def total(self, group: str, field: str) -> int:
        return self.totals[(group, field)]

    def take_unsent(self) -> dict[Key, int]:
        out = dict(self._unsent)
        self._unsent.clear()
        return out

    def restore_unsent(self, counts: dict[Key, int]) -> None:
        """Put back counts whose write failed; they go with the next flush."""
        self._unsent.update(counts)
