"""Window semantics (spec §6.1) as small pure functions over the plain structures of
docs/internals.md. The store's Lua scripts implement the same rules; its tests replay the
same operations through both and compare, so every rule here is stated exactly once.

    Item = {"ts": int record ms, "src": "topic:partition:offset", "payload": Any}

Newest record wins everywhere: an item replaces another only when its `ts` is equal or
newer, and on equal `ts` the later arrival (the call made later) wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

Item = dict[str, Any]

_EPOCH = datetime(1970, 1, 1)
HOUR_FORMAT = "%Y-%m-%d %H:00:00"


def make_item(ts: int, src: str, payload: Any) -> Item:
    return {"ts": ts, "src": src, "payload": payload}


def wins(new: Item, cur: Item | None) -> bool:
    """Newest record wins; a tie goes to the new (later-arriving) item."""
    return cur is None or new["ts"] >= cur["ts"]


# ---- latest / append ------------------------------------------------------------------------

def apply_latest(cur: Item | None, item: Item) -> Item:
    return item if wins(item, cur) else cur  # type: ignore[return-value]


def append(items: list[Item], item: Item, size: int) -> list[Item]:
    """Append oldest-first and drop the oldest beyond `size` (arrival order, not ts order)."""
    out = items + [item]
    return out[-size:] if len(out) > size else out


# ---- hourly ---------------------------------------------------------------------------------

def hour_of(send_time: str) -> str:
    """'YYYY-MM-DD HH:MM:SS' -> 'YYYY-MM-DD HH:00:00' (naive station-local time, never converted)."""
    return send_time[:13] + ":00:00"


@lru_cache(maxsize=16384)
def hour_index(hour: str) -> int:
    """Hours since 1970-01-01 00:00 of a naive hour key: used for gaps and window arithmetic."""
    dt = datetime(int(hour[0:4]), int(hour[5:7]), int(hour[8:10]), int(hour[11:13]))
    return int((dt - _EPOCH).total_seconds()) // 3600


@lru_cache(maxsize=16384)
def hour_key(index: int) -> str:
    return (_EPOCH + timedelta(hours=index)).strftime(HOUR_FORMAT)


def merge_hour_items(items: list[dict]) -> dict:
    """Merge several elements of one station-hour from one message (spec §6.1 hourly).

    Gun lists are united in first-seen order with a later element winning per gunNo; every
    other field (station-level powers included) comes from the last element that has it.
    """
    if len(items) == 1:
        return items[0]
    merged: dict[str, Any] = {}
    guns: dict[str, tuple[Any, Any]] = {}
    has_guns = False
    for it in items:
        if None in it.values():
            for k, v in it.items():
                if v is not None or k not in merged:
                    merged[k] = v
        else:  # the common case: every value wins as is
            merged.update(it)
        gp = it.get("gunPower")
        if isinstance(gp, dict):
            has_guns = True
            nos = gp.get("gunNo") or []
            avg = gp.get("outputPowerPerGunAvg") or []
            mx = gp.get("outputPowerPerGunMax") or []
            if len(avg) == len(nos) == len(mx):
                for g, a, m in zip(nos, avg, mx, strict=True):
                    guns[g] = (a, m)
            else:
                for j, g in enumerate(nos):
                    guns[g] = (avg[j] if j < len(avg) else None, mx[j] if j < len(mx) else None)
    merged.pop("gunPower", None)  # rebuilt from the united gun lists, placed last
    if has_guns:
        merged["gunPower"] = {
            "gunNo": list(guns),
            "outputPowerPerGunAvg": [a for a, _ in guns.values()],
            "outputPowerPerGunMax": [m for _, m in guns.values()],
        }
    return merged


def upsert_hourly(window: dict[str, Item], hour: str, item: Item, size: int) -> tuple[dict[str, Item], bool]:
    """Upsert one hour; keep the newest `size` hours counted back from the newest stored hour.

    Returns (window, ignored): `ignored` is True when the hour falls outside the window (it is
    older than newest - size + 1 hours), which the store counts. An older record for a stored
    hour loses (newest record wins) but is not "ignored".
    """
    h = hour_index(hour)
    newest = max((hour_index(k) for k in window), default=None)
    if newest is not None and h <= newest - size:
        return window, True
    out = dict(window)
    if wins(item, out.get(hour)):
        out[hour] = item
    top = h if newest is None else max(newest, h)
    out = {k: v for k, v in out.items() if hour_index(k) > top - size}
    return out, False


# ---- devices / global -----------------------------------------------------------------------

def upsert_device(window: dict[str, Item], key: str, item: Item, cap: int,
                  expire_before_ms: int | None = None) -> dict[str, Item]:
    """Latest record per device (newest wins). Devices last written before `expire_before_ms`
    (see device_expiry) are dropped on this write; beyond `cap`, the device with the oldest
    record timestamp goes (ties: the smaller key)."""
    out = dict(window)
    if wins(item, out.get(key)):
        out[key] = item
    if expire_before_ms is not None:
        out = {k: v for k, v in out.items() if v["ts"] >= expire_before_ms}
    while len(out) > cap:
        victim = min(out, key=lambda k: (out[k]["ts"], k))
        del out[victim]
    return out


def device_expiry(window: dict[str, Item] | None, item: Item, ttl_s: float | None, now_ms: int) -> int | None:
    """The `expire_before_ms` of a write of `item`: the TTL before the newest record of the
    window (this one included), capped at `now_ms`. A device silent for longer than the TTL
    while the station's other devices went on is removed; a record older than the TTL on
    arrival (a catch-up: every record minutes old) is kept, hidden by visible_devices, and the
    result does not depend on the order in which a station's records arrive."""
    if ttl_s is None:
        return None
    newest = max([item["ts"], *(v["ts"] for v in (window or {}).values())])
    return min(newest, now_ms) - int(ttl_s * 1000)


def visible_devices(window: dict[str, Item] | None, ttl_s: float | None, now_ms: int) -> dict[str, Item]:
    """Devices shown in module inputs: those whose record is not older than the TTL."""
    if not window:
        return {}
    if ttl_s is None:
        return dict(window)
    cutoff = now_ms - int(ttl_s * 1000)
    return {k: v for k, v in window.items() if v["ts"] >= cutoff}


def upsert_global(window: dict[str, Item], key: str, item: Item, size: int) -> tuple[dict[str, Item], bool]:
    """Upsert by key (calendar date; keys sort chronologically); keep the newest `size` keys.

    Returns (window, ignored): ignored when the window is full and `key` is older than all kept.
    """
    if key not in window and len(window) >= size and key < min(window):
        return window, True
    out = dict(window)
    if wins(item, out.get(key)):
        out[key] = item
    if len(out) > size:
        for k in sorted(out)[: len(out) - size]:
            del out[k]
    return out, False


# ---- orders ---------------------------------------------------------------------------------

@dataclass
class ClosedSecond:
    seq: int
    second: int
    late: bool
    orders: list[Item]

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "second": self.second, "late": self.late, "orders": list(self.orders)}


@dataclass
class OrderBook:
    """One station's car-order window (spec §6.1 orders), as a reference model.

    An order belongs to second floor(ts / 1000). At most one second is open; it closes when
    an order of a later second arrives or `order_close_s` after its first order was ingested.
    An order older than the open second, or not newer than the newest closed second, is late:
    it gets its own bucket marked late, closed at once. Each close takes the next sequence
    number. The newest `size` closed seconds are kept; a second evicted before every module
    in `modules` received it counts in `evicted_undelivered`. Each module has a cursor (the
    last sequence number it received).
    """

    size: int = 120
    order_close_s: float = 2.0
    modules: tuple[str, ...] = ()
    open_second: int | None = None
    open_since_ms: int | None = None
    open_orders: list[Item] = field(default_factory=list)
    closed: list[ClosedSecond] = field(default_factory=list)
    next_seq: int = 1
    newest_closed: int | None = None  # newest second closed on time (late buckets excluded)
    evicted: int = 0
    evicted_undelivered: int = 0
    late_orders: int = 0
    cursors: dict[str, int] = field(default_factory=dict)

    def add(self, item: Item, now_ms: int) -> list[ClosedSecond]:
        """Ingest one order (its record ts in `item`); returns the seconds this closed."""
        sec = item["ts"] // 1000
        late = (self.open_second is not None and sec < self.open_second) or (
            self.newest_closed is not None and sec <= self.newest_closed
        )
        if late:
            self.late_orders += 1
            return [self._close(sec, [item], late=True)]
        closed: list[ClosedSecond] = []
        if self.open_second is not None and sec > self.open_second:
            closed.append(self._close_open())
        if self.open_second is None:
            self.open_second, self.open_since_ms, self.open_orders = sec, now_ms, []
        self.open_orders.append(item)
        return closed

    def close_expired(self, now_ms: int) -> list[ClosedSecond]:
        """The periodic closer: closes the open second once `order_close_s` has passed."""
        if self.open_second is None or self.open_since_ms is None:
            return []
        if now_ms - self.open_since_ms < self.order_close_s * 1000:
            return []
        return [self._close_open()]

    def pending_for(self, module: str) -> list[ClosedSecond]:
        """Closed seconds after the module's cursor, oldest first."""
        cur = self.cursors.get(module, 0)
        return [c for c in self.closed if c.seq > cur]

    def advance(self, module: str, seq: int) -> None:
        """Move a cursor forward (never back: a re-delivered run must not rewind it)."""
        if seq > self.cursors.get(module, 0):
            self.cursors[module] = seq

    def _close_open(self) -> ClosedSecond:
        sec, orders = self.open_second, self.open_orders
        self.open_second, self.open_since_ms, self.open_orders = None, None, []
        assert sec is not None
        self.newest_closed = sec if self.newest_closed is None else max(self.newest_closed, sec)
        return self._close(sec, orders, late=False)

    def _close(self, sec: int, orders: list[Item], late: bool) -> ClosedSecond:
        c = ClosedSecond(self.next_seq, sec, late, orders)
        self.next_seq += 1
        self.closed.append(c)
        while len(self.closed) > self.size:
            gone = self.closed.pop(0)
            self.evicted += 1
            if any(self.cursors.get(m, 0) < gone.seq for m in self.modules):
                self.evicted_undelivered += 1
        return c
