"""Offset bookkeeping: what has been fully processed and may therefore be committed.

Kafka commits mean "everything before this offset is done". A partition's next commit is
the last processed offset + 1, and it only ever moves forward (a redelivered older record
cannot pull it back). Offsets wait here until a commit is due, so commits can be grouped
by time without ever covering work that did not finish (spec §6.8).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple


class TP(NamedTuple):
    """A (topic, partition) pair; kafka-python's TopicPartition compares equal to it."""

    topic: str
    partition: int


def first_offsets(records: Iterable[Any]) -> dict[TP, int]:
    """Lowest offset per partition in a batch: where to seek back if the batch is abandoned."""
    out: dict[TP, int] = {}
    for r in records:
        tp = TP(r.topic, r.partition)
        if tp not in out or r.offset < out[tp]:
            out[tp] = r.offset
    return out


def next_offsets(records: Iterable[Any]) -> dict[TP, int]:
    """Last offset + 1 per partition: what to commit once the batch is done."""
    last: dict[tuple[str, int], int] = {}
    get = last.get
    for r in records:
        k = (r.topic, r.partition)
        if r.offset >= get(k, -1):
            last[k] = r.offset
    return {TP(t, p): off + 1 for (t, p), off in last.items()}


class OffsetBook:
    """Processed-but-uncommitted offsets per partition."""

    def __init__(self) -> None:
        self._done: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}

    def mark_done(self, offsets: Mapping[TP, int]) -> None:
        for tp, off in offsets.items():
            if off > self._done.get(tp, -1) and off > self._committed.get(tp, -1):
                self._done[tp] = off

    def pending(self, only: Iterable[Any] | None = None) -> dict[TP, int]:
        """Offsets to commit (optionally only for some partitions)."""
        if only is None:
            return dict(self._done)
        keep = {TP(tp.topic, tp.partition) for tp in only}
        return {tp: off for tp, off in self._done.items() if tp in keep}

    def committed(self, offsets: Mapping[TP, int]) -> None:
        for tp, off in offsets.items():
            self._committed[tp] = max(off, self._committed.get(tp, -1))
            if self._done.get(tp, -1) <= off:
                self._done.pop(tp, None)

    def forget(self, partitions: Iterable[Any]) -> None:
        """Drop state of partitions we no longer own: their new owner commits them."""
        for tp in partitions:
            key = TP(tp.topic, tp.partition)
            self._done.pop(key, None)
            self._committed.pop(key, None)

    def __bool__(self) -> bool:
        return bool(self._done)


def consumer_lag(consumer: Any) -> dict[TP, int]:
    """High watermark minus position per partition `consumer` owns, from its fetch metadata
    (no I/O); a partition without a known high watermark or position is left out."""
    out: dict[TP, int] = {}
    for tp in consumer.assignment():
        hw = consumer.highwater(tp)
        if hw is None:
            continue
        try:
            pos = consumer.position(tp, timeout_ms=0)
        except Exception:  # noqa: BLE001 - no position yet (just assigned): no lag figure
            continue
        if pos is not None:
            out[TP(tp.topic, tp.partition)] = max(0, hw - pos)
    return out
