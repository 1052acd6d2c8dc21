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
import math
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from parsers.catalogue import Catalogue, TopicSpec, default_catalogue

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY_MS = 24 * HOUR
LOCAL_OFFSET_MS = 8 * HOUR  # payload times are station-local, UTC+8, no DST (spec §5.1)
STILL_CHARGING = "2070-01-02 08:00:01"  # endChargeTime sentinel (spec §5.1)
#: under Kafka's default 1 MiB message.max.bytes; big pushes are split between stations
DEFAULT_MAX_MESSAGE_BYTES = 900_000

#: the input aliases, in spec §2.1 order; topic names always come from the catalogue
INPUT_ALIASES = (
    "station_param", "station_realtime_data", "environment_calendar", "device_meter", "device_gun",
    "car_order", "car_price", "device_error", "device_host_dcdc", "device_host_acdc",
    "device_storage", "device_pv", "environment_weather",
)

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

_WEATHER = ("sunny", "cloudy", "overcast", "light rain", "moderate rain", "heavy rain", "thunderstorm", "fog")
_SEASONS = ((12, 1, 2, "winter"), (3, 4, 5, "spring"), (6, 7, 8, "summer"), (9, 10, 11, "autumn"))
_FAULTS = {
    "hostError": ("E101", "E102", "E205"),
    "acError": ("A01", "A07"),
    "dcError": ("D03", "D11"),
    "terminalError": ("T07", "T12", "T15"),
    "storageError": ("S02", "S09"),
}
# half-hour tariff patterns (48 codes): valley at night, peaks morning/evening, sharp in summer
_TARIFFS = (
    ["03"] * 16 + ["02"] * 4 + ["01"] * 2 + ["00"] * 2 + ["02"] * 4 + ["01"] * 2 + ["00"] * 4
    + ["01"] * 4 + ["02"] * 6 + ["03"] * 4,
    ["03"] * 14 + ["02"] * 6 + ["01"] * 6 + ["02"] * 8 + ["01"] * 8 + ["02"] * 4 + ["03"] * 2,
    ["03"] * 16 + ["01"] * 8 + ["02"] * 8 + ["01"] * 8 + ["02"] * 4 + ["03"] * 4,
)
_FIXED_HOLIDAYS = {(1, 1), (5, 1), (5, 2), (5, 3), (10, 1), (10, 2), (10, 3), (10, 4), (10, 5), (10, 6), (10, 7)}


class Message(NamedTuple):
    """One Kafka message to send. `reason` is None for good traffic, else the dead-letter
    reason the ingester must record (with `element_index` for a rejected element)."""

    topic: str
    value: bytes
    timestamp_ms: int
    reason: str | None = None
    element_index: int | None = None


def local_time(ms: int) -> str:
    """Epoch ms -> station-local 'YYYY-MM-DD HH:MM:SS' (UTC+8, naive)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime((ms + LOCAL_OFFSET_MS) // 1000))


def local_date(ms: int) -> str:
    return local_time(ms)[:10]


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789ABCDEF") for _ in range(n))


# ---- the simulated fleet ----------------------------------------------------------------

@dataclass
class Session:
    txn: str
    start_ms: int
    end_ms: int
    begin_soc: float
    target_soc: float
    capacity_kwh: float
    power_kw: float
    voltage: float
    producer: str
    start_local: str = ""

    def soc_at(self, t: int) -> float:
        gained = self.power_kw * (t - self.start_ms) / HOUR / self.capacity_kwh * 100
        return min(self.target_soc, self.begin_soc + gained)


@dataclass
class Gun:
    no: str
    host_code: str
    max_kw: float
    rng: random.Random
    next_start_ms: int = 0
    session: Session | None = None

    def advance(self, t: int) -> Session | None:
        """Bring the gun's state to time t (lazily creating and ending sessions)."""
        while True:
            if self.session is not None and t >= self.session.end_ms:
                self.next_start_ms = self.session.end_ms + int(self.rng.expovariate(1 / (25 * MINUTE)))
                self.session = None
            elif self.session is None and t >= self.next_start_ms:
                self.session = self._new_session(self.next_start_ms)
            else:
                return self.session

    def _new_session(self, start: int) -> Session:
        r = self.rng
        capacity = round(r.uniform(40, 120), 1)
        begin = float(r.randint(5, 50))
        target = float(min(100, begin + r.randint(25, 70)))
        power = round(min(self.max_kw, r.choice((60, 90, 120, 180, 250))) * r.uniform(0.7, 0.98), 1)
        duration_ms = int((target - begin) / 100 * capacity / power * HOUR)
        duration_ms = max(3 * MINUTE, min(2 * HOUR, duration_ms))
        producer = "0" * 16 if r.random() < 0.3 else "".join(r.choice("0123456789") for _ in range(16))
        return Session(
            txn=self.host_code + self.no + _hex(r, 16), start_ms=start, end_ms=start + duration_ms,
            begin_soc=begin, target_soc=target, capacity_kwh=capacity, power_kw=power,
            voltage=round(r.uniform(350, 750), 1), producer=producer, start_local=local_time(start),
        )

    def power_at(self, t: int) -> float:
        s = self.advance(t)
        return 0.0 if s is None else s.power_kw


@dataclass
class Host:
    code: str
    guns: list[Gun]
    modules: int


@dataclass
class Station:
    index: int
    id: str
    rng: random.Random
    lng: float
    lat: float
    grid_kva: float
    meter_id: str
    hosts: list[Host]
    storages: list[str]
    pv_kw: float  # 0 = no PV
    power_ids: list[str]
    tariff: int
    faults: dict[str, list[str]] = field(default_factory=dict)
    seed: int | str = 0
    _rngs: dict[str, random.Random] = field(default_factory=dict)

    def rng_for(self, alias: str) -> random.Random:
        """One RNG per (station, topic): leaving a topic out does not shift the others."""
        r = self._rngs.get(alias)
        if r is None:
            r = self._rngs[alias] = random.Random(f"{self.seed}:{self.index}:{alias}")
        return r

    @property
    def guns(self) -> list[Gun]:
        return [g for h in self.hosts for g in h.guns]


def make_stations(n: int, seed: int | str, start_ms: int) -> list[Station]:
    """N stations with ids, hosts, guns, storage and PV derived from the seed only."""
    ids_rng = random.Random(f"{seed}:ids")
    seen: set[str] = set()
    stations = []
    for i in range(n):
        sid = str(ids_rng.randrange(1_000_000_000_000_000_000, 2_000_000_000_000_000_000))
        while sid in seen:
            sid = str(ids_rng.randrange(1_000_000_000_000_000_000, 2_000_000_000_000_000_000))
        seen.add(sid)
        r = random.Random(f"{seed}:station:{i}")
        n_hosts = r.randint(1, 3)
        n_guns = max(n_hosts, r.randint(2, 8))
        prefix = r.choice(("52", "42", "31"))
        hosts = []
        gun_no = 0
        per_host = [n_guns // n_hosts + (1 if k < n_guns % n_hosts else 0) for k in range(n_hosts)]
        for k in range(n_hosts):
            code = prefix + f"{r.randrange(10**12):012d}"
            max_kw = r.choice((60.0, 120.0, 250.0))
            guns = []
            for _ in range(per_host[k]):
                gun_no += 1  # numbered station-wide so one hour's guns never collide across hosts
                g = Gun(no=f"{gun_no:02d}", host_code=code, max_kw=max_kw,
                        rng=random.Random(f"{seed}:gun:{i}:{gun_no}"))
                if g.rng.random() < 0.45:  # charging already at start
                    g.next_start_ms = start_ms - int(g.rng.uniform(0, 30 * MINUTE))
                else:
                    g.next_start_ms = start_ms + int(g.rng.expovariate(1 / (20 * MINUTE)))
                guns.append(g)
            hosts.append(Host(code=code, guns=guns, modules=r.choice((12, 16, 20, 20, 24))))
        storages = [_hex(r, 20) for _ in range(r.choice((0, 0, 1, 1, 2)))]
        pv_kw = round(r.uniform(20, 150), 1) if r.random() < 0.5 else 0.0
        power_ids = [f"sntt{r.randint(10, 99)}" for _ in range(len(storages) + (1 if pv_kw else 0))]
        stations.append(Station(
            index=i, id=sid, rng=r, lng=round(r.uniform(100.0, 122.0), 6), lat=round(r.uniform(20.0, 40.0), 6),
            grid_kva=r.choice((250.0, 400.0, 630.0, 800.0, 1000.0, 1250.0)), meter_id=f"MTR{r.randint(1, 9999):04d}",
            hosts=hosts, storages=storages, pv_kw=pv_kw, power_ids=power_ids, tariff=r.randrange(len(_TARIFFS)),
            faults={k: [] for k in _FAULTS}, seed=seed,
        ))
    return stations


# ---- payload builders (one element / object each) ---------------------------------------

def param_element(st: Station) -> dict[str, Any]:
    return {
        "stationId": st.id, "stationLng": st.lng, "stationLat": st.lat, "gunNum": len(st.guns),
        "gridCapacity": st.grid_kva, "meterId": st.meter_id, "powerNum": len(st.power_ids),
        "normalCap": round(186.8 * len(st.storages), 1), "hostCode": [h.code for h in st.hosts],
        "power": {"powerIds": list(st.power_ids)},
    }


def _diurnal(hour_local: int) -> float:
    """Charging demand by local hour: low at night, peaks late morning and evening."""
    return 0.15 + 0.45 * math.exp(-((hour_local - 11) ** 2) / 8) + 0.6 * math.exp(-((hour_local - 19) ** 2) / 6)


def realtime_elements(st: Station, hour_ms: int, rng: random.Random) -> list[dict[str, Any]]:
    """One element per (host, hour); the station totals ride on the last host's element."""
    hour_local = (hour_ms + LOCAL_OFFSET_MS) // HOUR % 24
    send = local_time(hour_ms)
    out: list[dict[str, Any]] = []
    st_avg = st_max = 0.0
    for h in st.hosts:
        guns = [g for g in h.guns if rng.random() > 0.05]  # the guns listed may change per hour
        avgs: list[float] = []
        maxs: list[float] = []
        for g in guns:
            a = round(g.max_kw * _diurnal(hour_local) * rng.uniform(0.2, 0.9), 2)
            avgs.append(a)
            maxs.append(round(min(g.max_kw, a * rng.uniform(1.2, 2.5)) if a else 0.0, 2))
        st_avg += sum(avgs)
        st_max = max(st_max, *maxs) if maxs else st_max
        out.append({
            "stationId": st.id, "hostCode": h.code, "sendTime": send,
            "gunPower": {"gunNo": [g.no for g in guns], "outputPowerPerGunAvg": avgs, "outputPowerPerGunMax": maxs},
        })
    if rng.random() < 0.9:  # station totals "may be absent"
        out[-1]["outputPowerPerStationAvg"] = round(st_avg, 2)
        out[-1]["outputPowerPerStationMax"] = round(max(st_max, st_avg * rng.uniform(1.1, 1.4)), 2)
    return out


def calendar_elements(now_ms: int) -> list[dict[str, Any]]:
    """≈400 dates around now: 200 back, 199 ahead."""
    today = (now_ms + LOCAL_OFFSET_MS) // DAY_MS * DAY_MS - LOCAL_OFFSET_MS
    out = []
    for d in range(-200, 200):
        ms = today + d * DAY_MS
        tm = time.gmtime((ms + LOCAL_OFFSET_MS) // 1000)
        out.append({
            "date": time.strftime("%Y-%m-%d", tm),
            "isHoliday": 1 if (tm.tm_mon, tm.tm_mday) in _FIXED_HOLIDAYS else 0,
            "isWeekend": 1 if tm.tm_wday >= 5 else 0,
        })
    return out


def meter_object(st: Station, t: int) -> dict[str, Any]:
    load = sum(g.power_at(t) for g in st.guns) + st.rng_for("device_meter").uniform(3, 20)
    return {"stationId": st.id, "meterId": st.meter_id, "meterPower": round(load, 1),
            "rmeterLimitPower": round(st.grid_kva * 0.9, 1)}


def gun_object(st: Station, h: Host, t: int) -> dict[str, Any]:
    return {"stationId": st.id, "hostCode": h.code, "gunNo": [g.no for g in h.guns],
            "status": ["charging" if g.advance(t) else "idle" for g in h.guns], "sendTime": local_time(t)}


def order_object(st: Station, g: Gun, s: Session, t: int, final: bool) -> dict[str, Any]:
    first = t - s.start_ms < SECOND
    power = 0.0 if final else round(s.power_kw * st.rng_for("car_order").uniform(0.97, 1.02), 1)
    return {
        "stationId": st.id, "transactionSerialNo": s.txn, "hostCode": g.host_code, "gunNo": g.no,
        "terminalMaxOutElectric": 250.0 if g.max_kw >= 250 else 200.0 if g.max_kw >= 120 else 125.0,
        "startChargeTime": s.start_local, "endChargeTime": local_time(t) if final else STILL_CHARGING,
        "beginSOC": s.begin_soc, "soc": round(s.soc_at(t), 2),
        "terminalRequireVoltage": 999.0 if first else s.voltage,
        "terminalRequireElectric": round(power * 1000 / s.voltage, 1),
        "outputPower": power, "carProducerCode": s.producer, "batteryNominalTotalCapacity": s.capacity_kwh,
    }


def price_elements(st: Station, t: int) -> list[dict[str, Any]]:
    """The station's tariff for today and (usually) tomorrow: several records per station."""
    r = st.rng_for("car_price")
    days = 2 if r.random() < 0.7 else 1
    today = (t + LOCAL_OFFSET_MS) // DAY_MS * DAY_MS - LOCAL_OFFSET_MS
    base = {"sharp": 1.25, "peak": 1.02, "flat": 0.66, "ebb": 0.32, "other": 0.0}
    out = []
    for d in range(days):
        day = local_date(today + d * DAY_MS)
        rec: dict[str, Any] = {
            "stationId": st.id, "hostCode": st.hosts[0].code, "dialNo": str(r.choice((2100, 2101, 3100))),
            "lossRate": 1, "sendTime": local_time(t), "startTime": f"{day} 00:00:00", "endTime": f"{day} 23:59:59",
        }
        for cls, fee in base.items():
            rec[f"{cls}ElectricFee"] = round(fee * r.uniform(0.95, 1.05), 4) if fee else 0.0
            rec[f"{cls}ServerFee"] = round(r.choice((0.4, 0.5, 0.6)), 2) if fee else 0.0
        for k, code in enumerate(_TARIFFS[st.tariff], start=1):
            rec[f"feeNo{k}"] = code
        out.append(rec)
    return out


def error_object(st: Station) -> dict[str, Any]:
    return {"stationId": st.id, **{k: list(v) for k, v in st.faults.items()}}


def dcdc_object(st: Station, h: Host, t: int) -> dict[str, Any]:
    total = sum(g.power_at(t) for g in h.guns)
    working = max(1, min(h.modules, math.ceil(total / 30))) if total else 0
    status = ["01" if k < working else "00" for k in range(h.modules)]
    jitter = st.rng_for("device_host_dcdc")
    power = [round(total / working * jitter.uniform(0.97, 1.03), 1) if k < working else 0.0 for k in range(h.modules)]
    return {"stationId": st.id, "hostCode": h.code, "dcWorkStatus": status, "dcdcPower": power}


def acdc_object(st: Station, h: Host, t: int) -> dict[str, Any]:
    total = sum(g.power_at(t) for g in h.guns)
    r = st.rng_for("device_host_acdc")
    return {"stationId": st.id, "hostCode": h.code, "acPower": round(total / 0.95 + r.uniform(0.5, 3), 1)}


def storage_object(st: Station, code: str, t: int) -> dict[str, Any]:
    r = st.rng_for("device_storage")
    hour = (t + LOCAL_OFFSET_MS) // HOUR % 24
    out_kw = round(r.uniform(20, 60) if 8 <= hour < 22 else -r.uniform(20, 60), 1)  # discharge by day
    soc = round(50 + 40 * math.sin((t / DAY_MS) * 2 * math.pi) + r.uniform(-1, 1), 1)
    return {
        "stationId": st.id, "hostCode": st.hosts[0].code, "storageCode": code,
        "batteryGroupSoc": min(100.0, max(0.0, soc)), "batteryGroupSoh": round(r.uniform(92, 99), 1),
        "batteryGroupElectric": round(out_kw * 1000 / 750, 1), "batteryGroupOutPower": out_kw,
        "maxTemperature": round(r.uniform(28, 36), 1), "minTemperature": round(r.uniform(20, 27), 1),
    }


def pv_object(st: Station) -> dict[str, Any]:
    r = st.rng_for("device_pv")
    cloud = r.uniform(0.3, 1.0)
    series = [round(max(0.0, st.pv_kw * cloud * math.sin(math.pi * (h - 6) / 12)), 1) if 6 <= h <= 18 else 0.0
              for h in range(24)]
    return {"stationId": st.id, "pvId": "PV01", "pvPreDcPower": series}


def weather_element(st: Station, t: int) -> dict[str, Any]:
    month = int(local_time(t)[5:7])
    season = next(s for *months, s in _SEASONS if month in months)
    r = st.rng_for("environment_weather")
    return {"stationId": st.id, "weatherSituationYesterday": r.choice(_WEATHER),
            "seasonTomorrow": season, "weatherSituationTomorrow": r.choice(_WEATHER)}


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
        kind = r.choice(sorted(_FAULTS))
        active = st.faults[kind]
        if active and r.random() < 0.6:
            active.remove(r.choice(active))
        else:
            code = r.choice(_FAULTS[kind])
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
