"""Planned runs and batch ids: the one definition both the ingester and the workers use.

A batch collects the results of one module for every station one source message made it
run (spec §6.6). Its id is deterministic, so a replayed message maps to the same batch:

- `<module>:<topic>:<partition>:<offset>` of the message that triggered the run, directly
  or through the cascade (for a closed order second, the last order message in it);
- `<module>:heartbeat:0:<tick epoch seconds>` for a heartbeat tick.

Kafka topic names cannot hold `:`, and module names are identifiers, so the id splits back
into its four parts unambiguously.
"""

from __future__ import annotations

from typing import NamedTuple

from parsers.records import Source

#: the pseudo-topic of heartbeat batch ids
HEARTBEAT_TOPIC = "heartbeat"


class PlannedRun(NamedTuple):
    """One module to run for one station, in the batch of its source message."""

    station: str
    module: str
    batch_id: str


class BatchRef(NamedTuple):
    """The parts of a batch id."""

    module: str
    topic: str
    partition: int
    offset: int


def batch_id(module: str, source: Source) -> str:
    """The batch of `module`'s runs triggered by the message at `source`."""
    return f"{module}:{source.topic}:{source.partition}:{source.offset}"


def heartbeat_batch_id(module: str, tick_s: int) -> str:
    """The batch of `module`'s heartbeat runs of the tick starting at `tick_s` (epoch seconds)."""
    return f"{module}:{HEARTBEAT_TOPIC}:0:{int(tick_s)}"


def module_of(batch_id: str) -> str:
    """The module a batch id belongs to (the id itself when it has no `:`)."""
    return batch_id.split(":", 1)[0]


def parse_batch_id(batch_id: str) -> BatchRef:
    """Split a batch id; ValueError names the id when it is not `<module>:<topic>:<part>:<offset>`."""
    parts = batch_id.split(":", 3)
    if len(parts) != 4:
        raise ValueError(f"batch id {batch_id!r}: expected <module>:<topic>:<partition>:<offset>")
    module, topic, partition, offset = parts
    try:
        return BatchRef(module, topic, int(partition), int(offset))
    except ValueError:
        raise ValueError(f"batch id {batch_id!r}: partition and offset must be integers") from None
