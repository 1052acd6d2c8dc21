"""The ingester against a real broker (Tansu or $STATIONFLOW_KAFKA) and a real redis-server:
samples into windows, dead letters, job fan-out and coalescing, a two-member group, and a
crash between the Redis write and the commit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from kafkautil import CONSUMER_GROUP_TEST_SETTINGS, consume_all, create_topics, produce, unique_catalogue
from samplefiles import SAMPLES

from ingest.service import Service, build
from parsers.catalogue import Catalogue
from parsers.envelopes import parse_message
from stationflow.runtime import queue_depth, scheduler
from stationflow.settings import Settings
from store.dlq import DeadLetters
from store.windows import WindowStore
from workers.scheduling import station_queue

pytestmark = [pytest.mark.heavy(66)]


ROOT = Path(__file__).resolve().parents[2]
BAD = SAMPLES / "bad"

#: bad sample -> (topic it is published on, expected reasons)
BAD_SAMPLES = {
    "01_invalid_utf8.bin": ("SCHEDULE-ENVIRONMENT-WEATHER", ["bad_utf8"]),
    "02_truncated_json.json": ("SCHEDULE-CAR-ORDER", ["bad_json"]),
    "03_wrong_type_realtime_array.json": ("SCHEDULE-STATION-REALTIME-DATA", ["bad_envelope"]),
    "04_wrong_type_param_string.json": ("SCHEDULE-STATION-PARAM", ["bad_envelope"]),
    "05_missing_station_id.json": ("SCHEDULE-DEVICE-METER", ["missing_station_id"]),
    "06_station_id_number.json": ("SCHEDULE-DEVICE-HOST-ACDC", ["bad_station_id"]),
    "07_nan_infinity.json": ("SCHEDULE-DEVICE-METER", ["non_finite_number"]),
    "09_deeply_nested.json": ("SCHEDULE-DEVICE-ERROR", ["too_deep"]),
    "10_unknown_wrapper.json": ("SCHEDULE-STATION-REALTIME-DATA", ["bad_envelope"]),
    "11_foreign_wrapper.json": ("SCHEDULE-ENVIRONMENT-WEATHER", ["bad_envelope"]),
    "12_empty_object.json": ("SCHEDULE-CAR-ORDER", ["bad_envelope"]),
    "13_null.json": ("SCHEDULE-STATION-PARAM", ["bad_envelope"]),
    "14_numbers_as_strings.json": ("SCHEDULE-DEVICE-METER", ["bad_field_type"]),
    "15_empty_value.bin": ("SCHEDULE-DEVICE-STORAGE", ["empty_value"]),
    "16_realtime_one_bad_element.json": ("SCHEDULE-STATION-REALTIME-DATA", ["missing_station_id"]),
    "17_price_bad_fee_code.json": ("SCHEDULE-CAR-PRICE", ["bad_field_value"]),
    "18_module_output_results_not_list.json": ("MODULE-OUTPUT-LOAD_PREDICTION", ["bad_envelope"]),
    "19_realtime_bad_values.json": ("SCHEDULE-STATION-REALTIME-DATA", ["bad_field_value", "bad_field_value"]),
}


def settings_for(cat: Catalogue, bootstrap: str, redis_url: str, group: str, prefix: str = "sf",
                 external: tuple[str, ...] = ("load_prediction",)) -> Settings:
    return Settings.from_dict({
        "prefix": prefix,
        "redis": {"url": redis_url},
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group, "consumer": dict(CONSUMER_GROUP_TEST_SETTINGS)},
        "topics": {t.alias: {"topic": t.topic} for t in cat.topics},
        "modules": {m: {"runs": "external"} for m in external},
        "ingest": {"commit_interval_s": 0.2},
    })


def run(settings: Settings, until_idle_s: float = 3.0, **kw: Any) -> Service:
    svc = build(settings, scheduler(settings), until_idle_s=until_idle_s,
                queue_depth=queue_depth(settings), **kw)
    assert svc.ingester.run() == 0
    return svc


def base_topic(cat: Catalogue, alias: str) -> str:
    return Catalogue.build().by_alias[alias].topic


def fresh(bootstrap: str) -> Catalogue:
    cat = unique_catalogue()
    create_topics(bootstrap, [t.topic for t in cat.topics], partitions=2)
    return cat


def test_samples_land_in_windows_and_bad_ones_in_the_dead_letters(kafka_bootstrap: str, redis_client: Any,
                                                                  redis_url: str) -> None:
    cat = fresh(kafka_bootstrap)
    settings = settings_for(cat, kafka_bootstrap, redis_url, "g-samples")
    consumed = {t.alias: t for t in settings.catalogue.consumed_topics()}
    expected_present: dict[str, set[str]] = {}
    bad_by_topic: dict[str, list[str]] = {}
    for name, (topic, _) in BAD_SAMPLES.items():
        bad_by_topic.setdefault(topic, []).append(name)
    for alias, spec in consumed.items():
        base = base_topic(cat, alias)
        good = (SAMPLES / f"{base}.json").read_bytes()
        for rec in parse_message(spec, good).records:
            if rec.station_id is not None:
                expected_present.setdefault(rec.station_id, set()).add(alias)
        bad = [(BAD / n).read_bytes() for n in bad_by_topic.get(base, [])]
        produce(kafka_bootstrap, spec.topic, [good, *bad, good], partition=0)  # good around the bad
    svc = run(settings)

    store = WindowStore(redis_client, settings.catalogue)
    present = store.present(list(expected_present), sorted(consumed))
    for station, aliases in expected_present.items():
        assert aliases <= present[station], f"{station}: missing {aliases - present[station]}"
    assert "environment_calendar" in present[next(iter(expected_present))]  # the global window

    entries = DeadLetters(redis_client).list(100)
    got: dict[str, list[str]] = {}
    for e in entries:
        got.setdefault(e["topic"], []).append(e["reason"])
    want: dict[str, list[str]] = {}
    for topic, reasons in BAD_SAMPLES.values():
        want.setdefault(consumed[_alias(topic)].topic, []).extend(reasons)
    assert {t: sorted(r) for t, r in got.items()} == {t: sorted(r) for t, r in want.items()}
    assert all(e["offset"] >= 1 for e in entries)  # offset 0 of every topic is the good one
    # counters readable with HGETALL
    c = {k.decode(): int(v) for k, v in redis_client.hgetall("sf:counters:ingest").items()}
    assert c["messages"] == 2 * len(consumed) + len(BAD_SAMPLES)
    assert c["dead_letters"] == len(entries) == 19
    assert c["commits"] >= 1
    assert svc.stats.total("ingest", "messages") == c["messages"]


def _alias(topic: str) -> str:
    return Catalogue.build().by_topic[topic].alias


def _realtime(stations: list[str], hour: str = "2025-11-19 10:00:00") -> bytes:
    return json.dumps({"realTimeData": [
        {"stationId": s, "sendTime": hour, "hostCode": "h",
         "gunPower": {"gunNo": ["01"], "outputPowerPerGunAvg": [1.0], "outputPowerPerGunMax": [2.0]}}
        for s in stations]}).encode()


def _jobs_by_station(redis_client: Any, settings: Settings) -> dict[str, int]:
    q = station_queue(redis_client, settings.queue.name)
    out: dict[str, int] = {}
    for job in q.get_jobs():  # a group job (workers.group) counts for each of its stations
        for station in job.args[0]:
            out[station] = out.get(station, 0) + 1
    return out


def test_fan_out_enqueues_one_job_per_station_and_coalesces(kafka_bootstrap: str, redis_client: Any,
                                                            redis_url: str) -> None:
    cat = fresh(kafka_bootstrap)
    settings = settings_for(cat, kafka_bootstrap, redis_url, "g-fanout", external=())
    t = settings.catalogue.by_alias
    three = ["ST-A", "ST-B", "ST-C"]
    produce(kafka_bootstrap, t["environment_calendar"].topic, [(SAMPLES / "SCHEDULE-ENVIRONMENT-CALENDAR.json").read_bytes()])
    produce(kafka_bootstrap, t["station_param"].topic,
            [json.dumps([{"stationId": s, "gunNum": 1, "hostCode": ["h"]} for s in three]).encode()])
    # one realtime message for three stations, then 40 hourly updates for ST-A alone
    produce(kafka_bootstrap, t["station_realtime_data"].topic,
            [_realtime(three)] + [_realtime(["ST-A"], f"2025-11-19 {h % 24:02d}:00:00") for h in range(40)],
            partition=0)
    run(settings)
    jobs = _jobs_by_station(redis_client, settings)
    assert jobs == {"ST-A": 1, "ST-B": 1, "ST-C": 1}
    trig = {k.decode(): int(v) for k, v in redis_client.hgetall("sf:counters:triggers").items()}
    assert trig["load_prediction:fired"] == 3  # one run per station, the rest absorbed
    assert trig["load_prediction:absorbed"] >= 40

    # an RQ worker in burst mode runs the three jobs; their batches upload every station once
    from rq.serializers import JSONSerializer

    from workers import context as wctx
    from workers.rqworker import StationWorker

    wctx.install(wctx.WorkerContext.from_settings(settings, redis_client))
    try:
        q = station_queue(redis_client, settings.queue.name)
        StationWorker([q], connection=redis_client, serializer=JSONSerializer).work(burst=True)
    finally:
        wctx.install(None)
    assert q.count == 0
    envs = [json.loads(r.value) for r in consume_all(
        kafka_bootstrap, t["load_prediction"].topic, 1, timeout_s=15)]
    uploaded = sorted(res["station_id"] for e in envs for res in e["results"])
    assert uploaded == three


def _windows(store: WindowStore, cat: Catalogue, stations: list[str]) -> dict[str, Any]:
    """Every window of the stations; orders as the sorted sources of every stored order, since
    how orders group into seconds depends on wall-clock closing (spec §6.1), not on delivery."""
    names = [t.alias for t in cat.consumed_topics()]
    out = {}
    for s in stations:
        w = store.read_windows(s, names)
        w["car_order"] = sorted(o["src"] for sec in (w.get("car_order") or []) for o in sec["orders"])
        out[s] = w
    return out


def _traffic(cat: Catalogue, n: int, seed: int = 7) -> dict[tuple[str, int], list[bytes]]:
    """A deterministic mix (devices, orders, realtime hours, params) for 6 stations.

    Each station's records go to one partition (station index mod 2): records produced in the
    same millisecond tie on timestamp, and across partitions "later arrival wins" would make
    the outcome depend on delivery interleaving, which is allowed but not comparable."""
    import random

    rnd = random.Random(seed)
    t = cat.by_alias
    out: dict[tuple[str, int], list[bytes]] = {}

    def put(alias: str, station: int, value: Any) -> None:
        out.setdefault((t[alias].topic, station % 2), []).append(json.dumps(value).encode())

    for i in range(n):
        k = rnd.randrange(6)
        s = f"S{k}"
        put("device_host_acdc", k, {"stationId": s, "hostCode": f"h{i % 3}", "acPower": float(i)})
        put("car_order", k, {"stationId": s, "transactionSerialNo": f"tx{i % 4}", "soc": i % 100,
                             "outputPower": 1.5})
        if i % 5 == 0:
            out.setdefault((t["station_realtime_data"].topic, k % 2), []).append(
                _realtime([s], f"2025-11-19 {i % 24:02d}:00:00"))
            put("station_param", k, [{"stationId": s, "gunNum": i}])
    return out


def _produce_all(bootstrap: str, traffic: dict[tuple[str, int], list[bytes]]) -> None:
    for (topic, partition), values in traffic.items():
        produce(bootstrap, topic, values, partition=partition)


def test_two_ingesters_split_partitions_and_match_a_single_consumer(kafka_bootstrap: str, redis_client: Any,
                                                                    redis_url: str) -> None:
    cat = fresh(kafka_bootstrap)
    _produce_all(kafka_bootstrap, _traffic(cat, 300))
    single = settings_for(cat, kafka_bootstrap, redis_url, "g-single", prefix="one", external=())
    run(single)

    pair = settings_for(cat, kafka_bootstrap, redis_url, "g-pair", prefix="two", external=())
    svcs = [build(pair, scheduler(pair), until_idle_s=6.0, instance_id=f"pair-{i}") for i in range(2)]
    codes: list[int] = []
    threads = [threading.Thread(target=lambda s=s: codes.append(s.ingester.run())) for s in svcs]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert codes == [0, 0]
    msgs = [s.stats.total("ingest", "messages") for s in svcs]
    total = sum(len(v) for v in _traffic(cat, 300).values())
    assert sum(msgs) == total  # every message processed once between them
    assert all(m > 0 for m in msgs), f"one member got no partition: {msgs}"

    stations = [f"S{i}" for i in range(6)]
    a = _windows(WindowStore(redis_client, single.catalogue, "one"), single.catalogue, stations)
    b = _windows(WindowStore(redis_client, pair.catalogue, "two"), pair.catalogue, stations)
    assert a == b
    assert sum(len(a[s]["car_order"]) for s in stations) == 300  # every order once


#: `stationflow ingest --instance-id crash-1 --until-idle 3` that exits abruptly (as SIGKILL
#: would) right after its second window write, before that write's offsets are committed
CRASH_AFTER_SECOND_WRITE = """\
import logging, os, sys
from stationflow import runtime
from stationflow.settings import Settings

def crash(writes):
    if writes >= 2:
        logging.shutdown()
        os._exit(137)

svc = runtime.build_ingester(Settings.load(), instance_id="crash-1", until_idle_s=3.0)
svc.ingester.processor.after_write = crash
sys.exit(runtime.run_ingester(svc))
"""


def test_crash_between_write_and_commit_then_restart_loses_and_duplicates_nothing(
        kafka_bootstrap: str, redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    cat = fresh(kafka_bootstrap)
    traffic = _traffic(cat, 120, seed=11)
    _produce_all(kafka_bootstrap, traffic)
    total = sum(len(v) for v in traffic.values())

    ref = settings_for(cat, kafka_bootstrap, redis_url, "g-ref", prefix="ref", external=())
    run(ref)

    cfg = tmp_path / "crash.toml"
    topics = "\n".join(f'[topics.{t.alias}]\ntopic = "{t.topic}"' for t in cat.topics)
    cfg.write_text(f'prefix = "crash"\n[redis]\nurl = "{redis_url}"\n[kafka]\nbootstrap_servers = "{kafka_bootstrap}"\n'
                   f'group_id = "g-crash"\n[kafka.consumer]\nsession_timeout_ms = 6000\nheartbeat_interval_ms = 1000\n'
                   f'max_poll_records = 50\n[ingest]\ncommit_interval_s = 0.0\n{topics}\n')
    env = dict(os.environ, STATIONFLOW_CONFIG=str(cfg))
    first = subprocess.run([sys.executable, "-c", CRASH_AFTER_SECOND_WRITE], env=env, capture_output=True,
                           text=True, timeout=120, cwd=ROOT)
    assert first.returncode == 137, first.stderr[-2000:]
    # the second write happened, its offsets were never committed
    c = {k.decode(): int(v) for k, v in redis_client.hgetall("crash:counters:ingest").items()}
    assert c.get("messages", 0) < total
    argv = [str(Path(sys.executable).parent / "stationflow"), "ingest", "--instance-id", "crash-1", "--until-idle", "3"]
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert second.returncode == 0, second.stderr[-2000:]

    stations = [f"S{i}" for i in range(6)]
    a = _windows(WindowStore(redis_client, ref.catalogue, "ref"), ref.catalogue, stations)
    b = _windows(WindowStore(redis_client, ref.catalogue, "crash"), ref.catalogue, stations)
    assert a == b  # nothing lost, nothing applied twice (orders would show duplicates)
    assert sum(len(b[s]["car_order"]) for s in stations) == 120
    skipped = sum(int(v) for k, v in redis_client.hgetall("crash:counters:ingest").items()
                  if k == b"replays_skipped")
    assert skipped > 0  # the redelivered tail was recognised as already applied


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
