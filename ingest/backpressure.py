"""Queue-depth backpressure with hysteresis.

Ingesting faster than workers drain only grows the queue (and Redis memory); Kafka is the
better buffer. Fetching pauses when the RQ queue passes `high_water` and resumes only once
it drops below `low_water`, so the consumer does not flap around a single threshold.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class QueueGate:
    high_water: int
    low_water: int
    paused: bool = False
    pauses: int = 0  # times the gate closed

    def __post_init__(self) -> None:
        if not 0 <= self.low_water < self.high_water:
            raise ValueError(f"queue low_water ({self.low_water}) must be below high_water ({self.high_water})")

    def update(self, depth: int) -> bool | None:
        """Feed the current depth; returns True when fetching must pause now, False when it
        may resume now, None when nothing changes."""
        if not self.paused and depth > self.high_water:
            self.paused = True
            self.pauses += 1
            return True
        if self.paused and depth < self.low_water:
            self.paused = False
            return False
        return None
