"""Realistic, reproducible telemetry for all 13 input topics, as Kafka message values.

Pure: no clock, no network. A `Traffic` object owns a simulated clock that starts at
`start_ms` and jumps from event to event; `messages()` yields them in timestamp order with
the simulated time as the Kafka record timestamp. Pacing against the wall clock (`SimClock`)
is the producer's business, so the same seed and start give byte-identical messages however
fast they are sent.

The cadences follow spec §2.1: car orders every second per charging gun (one session = one
transactionSerialNo, soc rising), DCDC/ACDC every second while a host charges else every
15 s, storage and gun status every 15 s, meter every 5 min, realtime hourly (the first push
carries 168 hours), price monthly, calendar yearly (≈400 dates around "now"), PV and weather
daily, errors when a fault state changes. Payload times are station-local (UTC+8) naive
strings (§5.1). Each station, gun and the bad-message stream has its own seeded RNG, so
restricting the topics does not change the messages of the remaining ones.

Bad messages (random bytes, truncated JSON, wrong envelope, numbers as strings, missing
station id) are mixed in at `bad_rate`, each labelled with the dead-letter reason the
ingester must give it (spec §6.7).
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from parsers.catalogue import Catalogue, TopicSpec, default_catalogue
from stationflow.fleet import (
    DAY_MS,
    DEFAULT_MAX_MESSAGE_BYTES,
    FAULT_CODES,
    HOUR,
    INPUT_ALIASES,
    LOCAL_OFFSET_MS,
    MINUTE,
    SECOND,
    STILL_CHARGING,
    Gun,
    Host,
    Message,
    Session,
    Station,
    acdc_object,
    calendar_elements,
    dcdc_object,
    error_object,
    gun_object,
    local_date,
    local_time,
    make_stations,
    meter_object,
    order_object,
    param_element,
    price_elements,
    pv_object,
    realtime_elements,
    storage_object,
    weather_element,
)

#: names of the fleet model that users of the traffic import from here
__all__ = [
    "BAD_KINDS", "DAY_MS", "DEFAULT_MAX_MESSAGE_BYTES", "HOUR", "INPUT_ALIASES", "LOCAL_OFFSET_MS", "MINUTE",
    "SECOND", "STILL_CHARGING", "Message", "SimClock", "Traffic", "local_date", "local_time", "wrap",
]

BAD_KINDS = ("random_bytes", "truncated_json", "wrong_envelope", "numbers_as_strings", "missing_station_id")

#: the numeric field a "numbers as strings" bad message turns into a string, per alias
_NUMERIC_FIELD = {
    "station_param": "stationLng",
    "station_realtime_data": "outputPowerPerStationAvg",
    "environment_calendar": "isHoliday",
    "device_meter": "meterPower",
    "car_order": "soc",
    "car_price": "peakElectricFee",
    "device_host_acdc": "acPower",
    "device_storage": "batteryGroupSoc",
}
_WRONG_WRAPPER = {"realTimeData": "realtimeData", "fee": "Fee", "weather": "weathers", "calendar": "calendars"}


# ---- envelopes ----------------------------------------------------------------------------

def _pack(prefix: bytes, suffix: bytes, blobs: Iterable[bytes], max_bytes: int) -> list[bytes]:
    """Join pre-serialised elements (each blob = one station's elements, comma-joined) into
    as few values as fit under max_bytes; a station's elements are never split."""
    out: list[bytes] = []
    cur: list[bytes] = []
    size = len(prefix) + len(suffix)
    for b in blobs:
        if cur and size + len(b) + 1 > max_bytes:
            out.append(prefix + b",".join(cur) + suffix)
            cur, size = [], len(prefix) + len(suffix)
        cur.append(b)
        size += len(b) + 1
    if cur:
        out.append(prefix + b",".join(cur) + suffix)
    return out


def _elements_blob(elements: Sequence[dict[str, Any]]) -> bytes:
    return b",".join(orjson.dumps(e) for e in elements)


def wrap(spec: TopicSpec, elements: Sequence[dict[str, Any]]) -> bytes:
    """Encode elements with the topic's envelope (spec §3)."""
    if spec.envelope == "station_array":
        return orjson.dumps(list(elements))
    if spec.envelope in ("wrapper", "global_wrapper"):
        return orjson.dumps({spec.wrapper_key: list(elements)})
    if spec.envelope == "single" and len(elements) == 1:
        return orjson.dumps(elements[0])
    raise ValueError(f"topic {spec.topic}: cannot wrap {len(elements)} elements in envelope {spec.envelope}")


# ---- pacing -------------------------------------------------------------------------------

@dataclass(frozen=True)
class SimClock:
    """Maps wall-clock seconds since start to simulated ms: speed 1 = real time, 60 = one
    simulated minute per second, 0 = as fast as possible (never wait)."""

    start_ms: int
    speed: float = 1.0

    def sim_ms(self, wall_elapsed_s: float) -> int:
        if self.speed <= 0:
            return 2**62
        return self.start_ms + int(wall_elapsed_s * 1000 * self.speed)

    def wait_s(self, timestamp_ms: int, wall_elapsed_s: float) -> float:
        """How long to sleep before a message stamped timestamp_ms is due."""
        if self.speed <= 0:
            return 0.0
        return max(0.0, (timestamp_ms - self.start_ms) / 1000 / self.speed - wall_elapsed_s)


# ---- the generator ------------------------------------------------------------------------

class Traffic:
    """Seeded traffic for N stations. Iterate `messages()` (endless) for Message tuples."""

    def __init__(
        self,
        stations: int = 10,
        seed: int = 0,
        start_ms: int | None = None,
        catalogue: Catalogue | None = None,
        topics: Iterable[str] | None = None,
        bad_rate: float = 0.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if stations < 1:
            raise ValueError("stations must be >= 1")
        if not 0.0 <= bad_rate <= 1.0:
            raise ValueError(f"bad_rate must be within [0, 1], got {bad_rate}")
        self.catalogue = catalogue or default_catalogue()
        self.seed = seed
        self.start_ms = int(time.time() * 1000) if start_ms is None else int(start_ms)
        self.bad_rate = bad_rate
        self.max_message_bytes = max_message_bytes
        self.specs = {a: self.catalogue.by_alias[a] for a in INPUT_ALIASES}
        self.aliases = self._select(topics)
        self.stations = make_stations(stations, seed, self.start_ms)
        self._bad_rng = random.Random(f"{seed}:bad")
        # bad messages are built from a station outside the fleet so they never draw on its RNGs
        self._sample_station = make_stations(1, f"{seed}:sample", self.start_ms)[0]
        self._heap: list[tuple[int, int, str, Any]] = []
        self._seq = 0
        self._schedule_start()

    def _select(self, topics: Iterable[str] | None) -> frozenset[str]:
        if topics is None:
            return frozenset(INPUT_ALIASES)
        out = set()
        for name in topics:
            spec = self.catalogue.topic(name)  # raises with a suggestion for typos
            if spec.alias not in INPUT_ALIASES:
                raise ValueError(f"topic {spec.topic} is not an input topic")
            out.add(spec.alias)
        return frozenset(out)

    def topic_of(self, alias: str) -> str:
        return self.specs[alias].topic

    # ---- scheduling -----------------------------------------------------------------------
    def _at(self, t: int, kind: str, ref: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, ref))

    def _schedule_start(self) -> None:
        t0 = self.start_ms
        want = self.aliases.__contains__
        for kind in ("station_param", "environment_calendar", "car_price", "environment_weather"):
            if want(kind):
                self._at(t0, kind)
        if want("station_realtime_data"):
            self._at(t0, "realtime_history")
        for st in self.stations:
            r = st.rng_for("start")  # every phase is drawn whatever the topic filter, so filters shift nothing
            pv, meter = t0 + r.randrange(SECOND), t0 + r.randrange(5 * MINUTE)
            error = t0 + int(r.expovariate(1 / (6 * HOUR)))
            if want("device_pv") and st.pv_kw:
                self._at(pv, "device_pv", st)
            if want("device_meter"):
                self._at(meter, "device_meter", st)
            if want("device_error"):
                self._at(error, "device_error", st)
            for code in st.storages:
                phase = t0 + r.randrange(15 * SECOND)
                if want("device_storage"):
                    self._at(phase, "device_storage", (st, code))
            for h in st.hosts:
                gun, dcdc, acdc = t0 + r.randrange(15 * SECOND), t0 + r.randrange(SECOND), t0 + r.randrange(SECOND)
                if want("device_gun"):
                    self._at(gun, "device_gun", (st, h))
                if want("device_host_dcdc"):
                    self._at(dcdc, "device_host_dcdc", (st, h))
                if want("device_host_acdc"):
                    self._at(acdc, "device_host_acdc", (st, h))
                if want("car_order"):
                    for g in h.guns:
                        s = g.advance(t0)
                        first = t0 + g.rng.randrange(SECOND) if s else g.next_start_ms
                        self._at(first, "car_order", (st, g))

    # ---- iteration --------------------------------------------------------------------------
    def messages(self, until_ms: int | None = None) -> Iterator[Message]:
        """Messages in timestamp order, endless unless `until_ms` (exclusive) is given."""
        while self._heap:
            if until_ms is not None and self._heap[0][0] >= until_ms:
                return
            t, _, kind, ref = heapq.heappop(self._heap)
            for alias, value in getattr(self, f"_on_{kind}")(t, ref):
                topic = self.topic_of(alias)
                yield Message(topic, value, t)
                if self.bad_rate and self._bad_rng.random() < self.bad_rate:
                    yield self.bad_message(alias, t)

    def take(self, n: int) -> list[Message]:
        out = []
        for m in self.messages():
            out.append(m)
            if len(out) >= n:
                break
        return out

    # ---- handlers: each returns [(alias, value)] and reschedules itself ------------------------
    def _chunks(self, alias: str, per_station: Iterable[Sequence[dict[str, Any]]]) -> list[tuple[str, bytes]]:
        spec = self.specs[alias]
        if spec.envelope == "station_array":
            prefix, suffix = b"[", b"]"
        else:
            prefix, suffix = b'{"' + spec.wrapper_key.encode() + b'":[', b"]}"  # type: ignore[union-attr]
        blobs = (_elements_blob(els) for els in per_station if els)
        return [(alias, v) for v in _pack(prefix, suffix, blobs, self.max_message_bytes)]

    def _on_station_param(self, t: int, _: Any) -> list[tuple[str, bytes]]:
        return self._chunks("station_param", ([param_element(st)] for st in self.stations))

    def _on_realtime_history(self, t: int, _: Any) -> list[tuple[str, bytes]]:
        """168 past hours for every station, newest first (elements need not be sorted)."""
        hour = t // HOUR * HOUR
        size = self.specs["station_realtime_data"].window_size
        per_station = (
            [e for k in range(1, size + 1)
             for e in realtime_elements(st, hour - k * HOUR, st.rng_for("station_realtime_data"))]
            for st in self.stations
        )
        out = self._chunks("station_realtime_data", per_station)
        self._at(hour + HOUR + 2 * MINUTE, "realtime_hour")
        return out

    def _on_realtime_hour(self, t: int, _: Any) -> list[tuple[str, bytes]]:
        """The hour that just ended, for every station, two minutes after it ended."""
        hour = t // HOUR * HOUR - HOUR
        self._at(t + HOUR, "realtime_hour")
        return self._chunks(
            "station_realtime_data",
            (realtime_elements(st, hour, st.rng_for("station_realtime_data")) for st in self.stations),
        )

    def _on_environment_calendar(self, t: int, _: Any) -> list[tuple[str, bytes]]:
        self._at(t + 365 * DAY_MS, "environment_calendar")
        return [("environment_calendar", wrap(self.specs["environment_calendar"], calendar_elements(t)))]

    def _on_car_price(self, t: int, _: Any) -> list[tuple[str, bytes]]:
        self._at(t + 30 * DAY_MS, "car_price")
        return self._chunks("car_price", (price_elements(st, t) for st in self.stations))

    def _on_environment_weather(self, t: int, _: Any) -> list[tuple[str, bytes]]:
        self._at(t + DAY_MS, "environment_weather")
        return self._chunks("environment_weather", ([weather_element(st, t)] for st in self.stations))

    def _single(self, alias: str, obj: dict[str, Any]) -> list[tuple[str, bytes]]:
        return [(alias, orjson.dumps(obj))]

    def _on_device_pv(self, t: int, st: Station) -> list[tuple[str, bytes]]:
        self._at(t + DAY_MS, "device_pv", st)
        return self._single("device_pv", pv_object(st))

    def _on_device_meter(self, t: int, st: Station) -> list[tuple[str, bytes]]:
        self._at(t + 5 * MINUTE, "device_meter", st)
        return self._single("device_meter", meter_object(st, t))

    def _on_device_error(self, t: int, st: Station) -> list[tuple[str, bytes]]:
        """A fault appears or clears; the message is the station's complete fault state."""
        r = st.rng_for("device_error")
        kind = r.choice(sorted(FAULT_CODES))
        active = st.faults[kind]
        if active and r.random() < 0.6:
            active.remove(r.choice(active))
        else:
            code = r.choice(FAULT_CODES[kind])
            if code not in active:
                active.append(code)
        self._at(t + max(MINUTE, int(r.expovariate(1 / (6 * HOUR)))), "device_error", st)
        return self._single("device_error", error_object(st))

    def _on_device_storage(self, t: int, ref: tuple[Station, str]) -> list[tuple[str, bytes]]:
        st, code = ref
        self._at(t + 15 * SECOND, "device_storage", ref)
        return self._single("device_storage", storage_object(st, code, t))

    def _on_device_gun(self, t: int, ref: tuple[Station, Host]) -> list[tuple[str, bytes]]:
        st, h = ref
        self._at(t + 15 * SECOND, "device_gun", ref)
        return self._single("device_gun", gun_object(st, h, t))

    def _host_period(self, h: Host, t: int) -> int:
        return SECOND if any(g.advance(t) for g in h.guns) else 15 * SECOND

    def _on_device_host_dcdc(self, t: int, ref: tuple[Station, Host]) -> list[tuple[str, bytes]]:
        st, h = ref
        self._at(t + self._host_period(h, t), "device_host_dcdc", ref)
        return self._single("device_host_dcdc", dcdc_object(st, h, t))

    def _on_device_host_acdc(self, t: int, ref: tuple[Station, Host]) -> list[tuple[str, bytes]]:
        st, h = ref
        self._at(t + self._host_period(h, t), "device_host_acdc", ref)
        return self._single("device_host_acdc", acdc_object(st, h, t))

    def _on_car_order(self, t: int, ref: tuple[Station, Gun]) -> list[tuple[str, bytes]]:
        """One snapshot per second while charging; the session's last one carries its end."""
        st, g = ref
        s = g.advance(t)
        if s is None:  # woke at a session end that advance() already closed: wait for the next
            self._at(g.next_start_ms, "car_order", ref)
            return []
        nxt = t + SECOND
        self._at(nxt, "car_order_end" if nxt >= s.end_ms else "car_order", (st, g, s) if nxt >= s.end_ms else ref)
        return self._single("car_order", order_object(st, g, s, t, final=False))

    def _on_car_order_end(self, t: int, ref: tuple[Station, Gun, Session]) -> list[tuple[str, bytes]]:
        st, g, s = ref
        g.advance(s.end_ms)  # close the session: picks the next start
        self._at(max(g.next_start_ms, t + SECOND), "car_order", (st, g))
        return self._single("car_order", order_object(st, g, s, t, final=True))

    # ---- bad input ----------------------------------------------------------------------------
    def sample_elements(self, alias: str, t: int | None = None) -> list[dict[str, Any]]:
        """A minimal good payload for one station (one element; one object for singles)."""
        t = self.start_ms if t is None else t
        st = self._sample_station
        h = st.hosts[0]
        g = h.guns[0]
        s = g._new_session(t - 10 * SECOND)
        builders = {
            "station_param": lambda: [param_element(st)],
            "station_realtime_data": lambda: realtime_elements(st, t // HOUR * HOUR - HOUR, random.Random(t))[-1:],
            "environment_calendar": lambda: calendar_elements(t)[:3],
            "device_meter": lambda: [meter_object(st, t)],
            "device_gun": lambda: [gun_object(st, h, t)],
            "car_order": lambda: [order_object(st, g, s, t, final=False)],
            "car_price": lambda: price_elements(st, t)[:1],
            "device_error": lambda: [error_object(st)],
            "device_host_dcdc": lambda: [dcdc_object(st, h, t)],
            "device_host_acdc": lambda: [acdc_object(st, h, t)],
            "device_storage": lambda: [storage_object(st, st.storages[0] if st.storages else "0" * 20, t)],
            "device_pv": lambda: [pv_object(st)],
            "environment_weather": lambda: [weather_element(st, t)],
        }
        return builders[alias]()

    def bad_message(self, alias: str, t: int, kind: str | None = None) -> Message:
        """A malformed value for the topic, labelled with the reason it must be dead-lettered."""
        r = self._bad_rng
        spec = self.specs[alias]
        kinds = [k for k in BAD_KINDS if _applicable(k, spec)]
        kind = kind or r.choice(kinds)
        if kind not in kinds:
            raise ValueError(f"bad kind {kind!r} does not apply to topic {spec.topic}")
        elements = self.sample_elements(alias, t)
        good = wrap(spec, elements)
        element_index: int | None = None
        if kind == "random_bytes":
            value, reason = b"\xff" + r.randbytes(r.randint(8, 120)), "bad_utf8"
        elif kind == "truncated_json":
            value, reason = good[: r.randint(1, len(good) - 1)], "bad_json"
        elif kind == "wrong_envelope":
            reason = "bad_envelope"
            if spec.envelope == "single":
                value = orjson.dumps(elements)  # an array where an object is expected
            elif spec.envelope == "station_array":
                value = orjson.dumps(good.decode())  # double-encoded: a JSON string of JSON text
            else:
                value = orjson.dumps({_WRONG_WRAPPER[spec.wrapper_key]: elements})  # type: ignore[index]
        elif kind == "numbers_as_strings":
            elements = elements[:1]
            name = _NUMERIC_FIELD[alias]
            elements[0][name] = str(elements[0].get(name, 12.5))
            value, reason = wrap(spec, elements), "bad_field_type"
            element_index = None if spec.envelope == "single" else 0
        else:  # missing_station_id
            elements = elements[:1]
            elements[0].pop("stationId")
            value, reason = wrap(spec, elements), "missing_station_id"
            element_index = None if spec.envelope == "single" else 0
        return Message(spec.topic, value, t, reason, element_index)


def _applicable(kind: str, spec: TopicSpec) -> bool:
    if kind == "numbers_as_strings":
        return spec.alias in _NUMERIC_FIELD
    if kind == "missing_station_id":
        return not spec.is_global
    return True
