"""The ingest loop's sizes and intervals, from [ingest] and `kafka.consumer.max_poll_records`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoopOptions:
    """The loop's sizes and intervals ([ingest] and `kafka.consumer.max_poll_records`)."""

    max_records: int = 2000
    poll_timeout_ms: int = 1000
    commit_interval_s: float = 1.0
    close_interval_s: float = 0.5  # the order closer's period
    summary_interval_s: float = 60.0
    depth_interval_s: float = 0.5  # how often the queue depth is read for backpressure
    until_idle_s: float | None = None  # exit once idle this long (None: run until stopped)


__all__ = ["LoopOptions"]
