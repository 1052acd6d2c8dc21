"""The values that flow from parsers to the store: one per-station record per window update.

These are the contract between `parsers` (which decide), `store` (which persists) and
`ingest` (which wires them); keep them plain so they pickle, msgpack and compare cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record came from in Kafka; kept with every stored item (spec §6.1)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int  # Kafka record timestamp; the ingest clock when the record had none

    def coords(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class Record:
    """One window update for one station (or for a global window when station_id is None).

    `op` is the window kind of the topic; `key` is the upsert key where the kind has one:
    the hour ("YYYY-MM-DD HH:00:00") for `hourly`, the device id for `devices`, the date for
    `global`; None otherwise. `payload` is plain decoded JSON (already merged per hour for
    hourly, the list of the station's fee records for car_price).
    """

    station_id: str | None
    alias: str
    op: str
    key: str | None
    payload: Any
    element_index: int | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """One element of a multi-station message that failed its element checks (spec §6.7)."""

    reason: str
    detail: str
    element_index: int | None
    raw: bytes = b""


class ParseError(Exception):
    """A whole message (or, with element_index, one element) that must be dead-lettered."""

    def __init__(self, reason: str, detail: str, element_index: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail[:500]
        self.element_index = element_index


@dataclass(slots=True)
class ParseResult:
    """Good records of a message plus the elements rejected one by one."""

    records: list[Record]
    rejections: list[Rejection]
