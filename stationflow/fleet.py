"""The simulated fleet behind `stationflow.traffic`: stations, their guns, hosts and charging
sessions, and the JSON elements each input topic carries for them.

Pure and seeded: each station (and each gun) draws on its own RNG, so the same seed gives
the same fleet and the same elements whichever topics are produced. Payload times are
station-local (UTC+8) naive strings (spec §5.1); the cadences that decide when an element
is sent live in `stationflow.traffic.Traffic`.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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


_WEATHER = ("sunny", "cloudy", "overcast", "light rain", "moderate rain", "heavy rain", "thunderstorm", "fog")
_SEASONS = ((12, 1, 2, "winter"), (3, 4, 5, "spring"), (6, 7, 8, "summer"), (9, 10, 11, "autumn"))
FAULT_CODES = {
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
            faults={k: [] for k in FAULT_CODES}, seed=seed,
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
