"""`stationflow inspect` and `stationflow status` against a real redis-server filled by
WindowStore.apply (generated traffic), the scheduler and a real worker run, and consumer lag
against the real broker."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from kafkautil import create_topics, produce, unique_suffix

from ingest.triggers import plan_runs
from parsers.catalogue import default_catalogue
from parsers.envelopes import parse_message
from parsers.records import Source
from stationflow.cli import main
from stationflow.inspection import read_station, station_view
from stationflow.status import consumer_lag, gather, rates
from stationflow.traffic import Traffic
from store.codec import decode_item
from store.dlq import DeadLetter, DeadLetters
from store.keys import Keys, describe_keys
from store.windows import WindowStore
from workers.scheduling import ScheduleOptions, schedule

PREFIX = "sfops"
CAT = default_catalogue()


def _config(tmp_path: Path, redis_url: str, bootstrap: str = "127.0.0.1:9", group: str = "g-none") -> Path:
    path = tmp_path / "stationflow.toml"
    path.write_text(f'prefix = "{PREFIX}"\n[redis]\nurl = "{redis_url}"\n'
                    f'[kafka]\nbootstrap_servers = "{bootstrap}"\ngroup_id = "{group}"\n')
    return path


def _cli(config: Path, *args: str):
    return CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)


@pytest.fixture
def filled(redis_client):
    """Three stations' traffic (100 simulated seconds, two partitions) applied to the store."""
    r = redis_client
    store = WindowStore(r, CAT, PREFIX)
    now = int(time.time() * 1000)
    t0 = now - 110_000
    traffic = Traffic(stations=3, seed=11, start_ms=t0)
    offsets: dict[tuple[str, int], int] = {}
    messages = []
    for i, m in enumerate(traffic.messages(until_ms=t0 + 100_000)):
        p = i % 2
        o = offsets[(m.topic, p)] = offsets.get((m.topic, p), -1) + 1
        messages.append((Source(m.topic, p, o, m.timestamp_ms), parse_message(CAT.by_topic[m.topic], m.value).records))
    triggers = store.apply(messages, now).triggers
    triggers += store.close_expired_orders(now + 10_000)
    store.flush_counters()
    return {"r": r, "store": store, "now": now, "stations": [s.id for s in traffic.stations], "triggers": triggers}


# ---- inspect --------------------------------------------------------------------------------------

def test_inspect_json_matches_what_redis_holds(filled, redis_url, tmp_path):
    r, station = filled["r"], filled["stations"][0]
    k = Keys(PREFIX)
    out = _cli(_config(tmp_path, redis_url), "inspect", station, "--json")
    assert out.exit_code == 0, out.output
    view = json.loads(out.output)
    assert view["station"] == station
    topics = view["topics"]
    assert set(topics) == {t.alias for t in CAT.input_topics}

    hours = sorted(x.decode() for x in r.hkeys(k.hourly(station, "station_realtime_data")))
    rt = topics["station_realtime_data"]
    assert (rt["hours"], rt["first_hour"], rt["last_hour"]) == (len(hours), hours[0], hours[-1])
    assert sum(rt["hours_per_day"].values()) == len(hours)

    devices = sorted(x.decode() for x in r.hkeys(k.devices(station, "device_host_dcdc")))
    assert sorted(topics["device_host_dcdc"]["devices"]) == devices

    closed = r.zcard(k.orders_closed(station, "car_order"))
    assert topics["car_order"]["closed_seconds"] == closed > 0
    assert topics["car_order"]["last_seq"] == topics["car_order"]["first_seq"] + closed - 1

    param = decode_item(r.get(k.latest(station, "station_param")))
    assert topics["station_param"]["figures"]["stationId"] == station
    assert topics["station_param"]["src"] == param["src"]
    age = (filled["now"] - param["ts"]) / 1000
    assert abs(topics["station_param"]["age_s"] - age) < 5  # the command's clock runs on a little
    assert topics["station_param"]["stale"] is False  # station param never goes stale

    prices = topics["car_price"]["records"]
    assert prices and all(p["min_price"] <= p["max_price"] for p in prices)
    assert prices[0]["slots"][0].startswith("00:00-") and "-24:00 " in prices[0]["slots"][-1]
    hwm = {f.decode()[4:]: int(v) for f, v in r.hgetall(k.meta(station)).items() if f.startswith(b"hwm:")}
    assert view["offsets"] == hwm and hwm


def test_inspect_freshness_marks_old_devices_stale_and_hidden(redis_client, redis_url, tmp_path):
    store = WindowStore(redis_client, CAT, PREFIX)
    now = int(time.time() * 1000)
    spec = CAT.topic("device_host_acdc")
    old, new = now - 50_000, now - 5_000  # ttl is 60 s (older devices are dropped on write)
    msgs = []
    for off, (host, ts) in enumerate((("H-old", old), ("H-new", new))):
        value = json.dumps({"stationId": "S-fresh", "hostCode": host, "acPower": 12.5}).encode()
        msgs.append((Source(spec.topic, 0, off, ts), parse_message(spec, value).records))
    store.apply(msgs, now)
    out = _cli(_config(tmp_path, redis_url), "inspect", "S-fresh", "device_host_acdc", "--json")
    view = json.loads(out.output)
    assert list(view["topics"]) == ["device_host_acdc"]  # ALIAS restricts the view
    acdc = view["topics"]["device_host_acdc"]
    assert acdc["stale"] is False and 4 <= acdc["age_s"] < 30  # the newest record decides
    assert acdc["devices"]["H-old"]["visible"] is True and acdc["devices"]["H-old"]["figures"]["acPower"] == 12.5
    later = station_view(CAT, read_station(redis_client, CAT, "S-fresh", ["device_host_acdc"], prefix=PREFIX),
                         now + 20_000)["topics"]["device_host_acdc"]["devices"]
    assert (later["H-old"]["visible"], later["H-new"]["visible"]) == (False, True)  # 70 s old vs 25 s

    meter = CAT.topic("device_meter")
    very_old = now - int(meter.ttl_s * 1000) - 60_000
    store.apply([(Source(meter.topic, 0, 0, very_old),
                   parse_message(CAT.topic("device_meter"), json.dumps(
                       {"stationId": "S-fresh", "meterId": "M1", "meterPower": 3.5, "rmeterLimitPower": 9.0}
                   ).encode()).records)], now)
    text = _cli(_config(tmp_path, redis_url), "inspect", "S-fresh").output
    meter_line = next(line for line in text.splitlines() if line.strip().startswith("device_meter"))
    assert "STALE" in meter_line  # a minute past its TTL
    acdc_line = next(line for line in text.splitlines() if line.strip().startswith("device_host_acdc"))
    assert "fresh" in acdc_line and "H-old: age" in text


def test_inspect_outputs_and_text(filled, redis_url, tmp_path):
    store, station = filled["store"], filled["stations"][1]
    store.store_output(station, "load_prediction", {"station_id": station, "prediction": [1.0, 2.5, 4.0],
                                                    "confidence": 0.875}, filled["now"] - 2000)
    view = json.loads(_cli(_config(tmp_path, redis_url), "inspect", station, "--json").output)
    lp = view["outputs"]["load_prediction"]
    assert lp["figures"] == {"station_id": station, "prediction": "[3 numbers, 1..4]", "confidence": 0.875}
    assert lp["src"] == "local" and 1.5 <= lp["age_s"] < 30
    assert set(view["outputs"]) == {"load_prediction"}

    text = _cli(_config(tmp_path, redis_url), "inspect", station).output
    assert text.splitlines()[0] == f"redis {redis_url} (prefix {PREFIX}) · kafka 127.0.0.1:9, consumer group g-none"
    assert text.splitlines()[1].startswith(f"station {station}")
    assert "station_realtime_data  hourly" in text and "load_prediction" in text
    assert '"confidence": 0.875' in text
    assert view["source"] == {"redis": redis_url, "redis_is_default": False, "prefix": PREFIX,
                              "kafka": "127.0.0.1:9", "group": "g-none"}

    # a topic alias narrows the windows, not the outputs; a module name narrows both
    one = _cli(_config(tmp_path, redis_url), "inspect", station, "car_price").output
    assert "car_price" in one and "station_realtime_data" not in one
    assert "none yet" not in one and '"confidence": 0.875' in one
    only = json.loads(_cli(_config(tmp_path, redis_url), "inspect", station, "SOH_model", "--json").output)
    assert only["outputs"] == {} and only["topics"] == {}


def test_inspect_keys_and_errors(redis_client, redis_url, tmp_path):
    cfg = _config(tmp_path, redis_url)
    rows = describe_keys(PREFIX)
    empty = _cli(cfg, "inspect", "--keys").output  # no station yet: the schema's own example id
    assert "this Redis holds no station yet" in empty
    assert f"redis-cli -u '{redis_url}' {rows[0][3]}" in empty

    redis_client.zadd(Keys(PREFIX).stations, {"S-older": 1, "S-newest": 2})
    text = _cli(cfg, "inspect", "--keys").output
    assert text.splitlines()[1] == "examples for station S-newest"
    for pattern, _, _, example in rows:  # complete commands, for a station this Redis has
        assert pattern in text and f"redis-cli -u '{redis_url}' {example.replace('1053405539402387456', 'S-newest')}" in text
    as_json = json.loads(_cli(cfg, "inspect", "--keys", "--json").output)
    assert [x["pattern"] for x in as_json["keys"]] == [row[0] for row in rows]
    assert as_json["station"] == "S-newest" and as_json["redis_cli"] == f"redis-cli -u '{redis_url}'"

    bad = CliRunner().invoke(main, ["--config", str(cfg), "inspect", "S1", "car_ordr"])
    assert bad.exit_code == 2 and "car_order" in bad.output  # the closest alias is suggested
    missing = CliRunner().invoke(main, ["--config", str(cfg), "inspect"])
    assert missing.exit_code == 2 and "--keys" in missing.output
    empty = _cli(cfg, "inspect", "no-such-station").output
    assert "nothing stored for this station" in empty


def test_station_view_is_pure_over_read_material(filled):
    """The same read material gives the same view; ages follow the clock passed in."""
    raw = read_station(filled["r"], CAT, filled["stations"][2], prefix=PREFIX)
    a = station_view(CAT, raw, filled["now"])
    b = station_view(CAT, raw, filled["now"] + 10_000)
    assert a["topics"]["station_param"]["age_s"] + 10 == pytest.approx(b["topics"]["station_param"]["age_s"])
    assert a["topics"]["device_host_dcdc"]["stale"] is False
    assert station_view(CAT, raw, filled["now"] + 3_600_000)["topics"]["device_host_dcdc"]["stale"] is True


# ---- status -------------------------------------------------------------------------------------

def test_status_json_counts_stations_dead_letters_queue_and_batches(filled, redis_url, tmp_path):
    r, store, now = filled["r"], filled["store"], filled["now"]
    dl = DeadLetters(r, PREFIX)
    dl.add([DeadLetter("SCHEDULE-CAR-ORDER", 0, 5, now, "bad_json", "cut", b"{\"a\""),
            DeadLetter("SCHEDULE-CAR-ORDER", 1, 6, now, "bad_json", "cut", b"{"),
            DeadLetter("SCHEDULE-DEVICE-METER", 0, 7, now, "missing_station_id", "no id", b"{}")])
    plan = plan_runs(filled["triggers"], CAT, lambda s, n: store.present(s, n, now), store.stations)
    res = schedule(r, CAT, plan.runs, ScheduleOptions(prefix=PREFIX, queue="stationflow"))
    assert res.enqueued

    before = gather(r, PREFIX, "stationflow", workers=False)
    out = _cli(_config(tmp_path, redis_url), "status", "--json", "--no-lag")
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    s = d["summary"]
    assert s["stations"] == 3
    assert s["dead_letters"] == 3 and d["dlq_entries"] == 3
    assert d["dlq_counts"] == {"SCHEDULE-CAR-ORDER:bad_json": 2, "SCHEDULE-DEVICE-METER:missing_station_id": 1}
    assert d["queues"]["stationflow"]["queued"] == len(res.enqueued) == s["queued"]
    assert s["batches_open"] == r.zcard(Keys(PREFIX).batches_due) == res.batches_created > 0
    assert s["batches_created"] == res.batches_created
    applied = sum(int(v) for t in CAT.input_topics
                  for f, v in r.hgetall(Keys(PREFIX).topic_counters(t.topic)).items() if f == b"records_applied")
    assert d["counters"]["topic:SCHEDULE-CAR-ORDER"]["records_applied"] > 0 and applied > 0
    assert d["workers"] == []

    text = _cli(_config(tmp_path, redis_url), "status", "--no-lag").output
    assert "3 stations known" in text
    assert "dead letters by reason: bad_json 2, missing_station_id 1" in text
    assert f"queue stationflow: queued {len(res.enqueued)}" in text
    assert "workers: none registered" in text

    # rates between two snapshots come from counter deltas
    dl.add([DeadLetter("SCHEDULE-CAR-ORDER", 0, 9, now, "bad_utf8", "x", b"\xff")])
    after = gather(r, PREFIX, "stationflow", workers=False)
    after.taken_ms = before.taken_ms + 2000
    assert rates(before, after)["dead_letters_per_s"] == 0.5


def test_status_after_a_worker_run_shows_runs_and_uploads(filled, redis_url, tmp_path, kafka_bootstrap):
    r, store, now = filled["r"], filled["store"], filled["now"]
    suffix = unique_suffix()
    cfg = tmp_path / "stationflow.toml"
    lines = [f'prefix = "{PREFIX}"', f'[redis]\nurl = "{redis_url}"', f'[kafka]\nbootstrap_servers = "{kafka_bootstrap}"']
    for m in CAT.modules:  # uploads go to private output topics on the shared broker
        lines.append(f'[topics.{m.name}]\ntopic = "{m.output_topic}-{suffix}"')
    cfg.write_text("\n".join(lines) + "\n")
    create_topics(kafka_bootstrap, [f"{m.output_topic}-{suffix}" for m in CAT.modules], partitions=1)
    plan = plan_runs(filled["triggers"], CAT, lambda s, n: store.present(s, n, now), store.stations)
    schedule(r, CAT, plan.runs, ScheduleOptions(prefix=PREFIX, queue="stationflow"))
    done = _cli(cfg, "worker", "--burst")
    assert done.exit_code == 0, done.output
    d = json.loads(_cli(cfg, "status", "--json", "--no-lag").output)
    s = d["summary"]
    runs = d["counters"]["runs"]
    assert s["runs_ok"] == sum(n for f, n in runs.items() if f.endswith(":ok")) > 0
    assert s["queued"] == 0 and s["running"] == 0
    assert s["batches_uploaded"] == d["counters"]["batches"]["uploaded"] > 0
    text = _cli(cfg, "status", "--no-lag").output
    assert "runs:  module" in text and "load_prediction" in text


def test_consumer_lag_per_partition(kafka_bootstrap):
    topic, group = f"sf-lag-{unique_suffix()}", f"g-lag-{unique_suffix()}"
    create_topics(kafka_bootstrap, [topic], partitions=2)
    for p, n in ((0, 5), (1, 3)):  # one request each: Tansu reports a batch's end as its first offset + 1
        for _ in range(n):
            produce(kafka_bootstrap, topic, [b"x"], partition=p)
    c = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    try:
        c.assign([TopicPartition(topic, 0)])
        c.commit({TopicPartition(topic, 0): OffsetAndMetadata(2, "", -1)})
    finally:
        c.close()
    lag = consumer_lag({"bootstrap_servers": kafka_bootstrap}, group, [topic])
    assert lag == {topic: {0: {"committed": 2, "end": 5, "lag": 3}, 1: {"committed": None, "end": 3, "lag": 3}}}


def test_status_reports_an_unreachable_kafka_and_keeps_the_redis_side(filled, redis_url, tmp_path):
    cfg = _config(tmp_path, redis_url, bootstrap="127.0.0.1:9")
    out = _cli(cfg, "status", "--json")
    d = json.loads(out.output)
    assert d["summary"]["stations"] == 3
    assert d["lag"] is None and d["lag_error"]


# ---- pure summaries (no servers) ----------------------------------------------------------------

def test_pure_summaries():
    from stationflow.inspection import key_figures, price_figures
    from stationflow.status import dead_letters_by, lag_table, runs_by_module

    tp0, tp1 = TopicPartition("T", 0), TopicPartition("T", 1)
    assert lag_table([tp1, tp0], {tp0: 10, tp1: 4}, {tp0: 7, tp1: -1}) == {
        "T": {0: {"committed": 7, "end": 10, "lag": 3}, 1: {"committed": None, "end": 4, "lag": 4}}}
    assert runs_by_module({"SOH_model:ok": 3, "SOH_model:failed:not_ready": 2, "SOH_model:failed:timeout": 1,
                           "SOH_model:us": 900}) == {
        "SOH_model": {"ok": 3, "none": 0, "failed": 3, "failed:not_ready": 2, "failed:timeout": 1, "us": 900}}
    assert dead_letters_by({"A-B:bad_json": 2, "C:bad_json": 1, "C:too_large": 4}) == {"bad_json": 3, "too_large": 4}
    assert dead_letters_by({"A-B:bad_json": 2, "C:too_large": 4}, "topic") == {"A-B": 2, "C": 4}
    rec = {"sendTime": "2025-11-19 08:00:00", "peakElectricFee": 1.0, "peakServerFee": 0.5, "ebbElectricFee": 0.3,
           "ebbServerFee": 0.2, **{f"feeNo{k}": "03" if k <= 16 else "01" for k in range(1, 49)}}
    figs = price_figures(rec)
    assert figs["slots"] == ["00:00-08:00 ebb 0.5", "08:00-24:00 peak 1.5"]
    assert (figs["min_price"], figs["max_price"]) == (0.5, 1.5)
    assert key_figures({"a": [1, 2.5], "b": "x" * 50, "c": {"d": 1}, "e": 0.123456}) == {
        "a": "[2 numbers, 1..2.5]", "b": "x" * 37 + "...", "c": "{1 keys}", "e": 0.123}


def test_status_watch_prints_rates_from_counter_deltas(filled, redis_url, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    cfg = _config(tmp_path, redis_url)
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from stationflow.cli import main; sys.exit(main())",
                             "--config", str(cfg), "status", "--watch", "0.5", "--json", "--no-lag"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("STATIONFLOW_")})
    try:
        first = json.loads(proc.stdout.readline())
        DeadLetters(filled["r"], PREFIX).add([DeadLetter("T", 0, 1, 1, "bad_json", "x", b"{")])
        second = json.loads(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "rates" not in first and first["summary"]["dead_letters"] == 0
    assert second["summary"]["dead_letters"] == 1
    dt = (second["taken_ms"] - first["taken_ms"]) / 1000
    assert second["rates"]["dead_letters_per_s"] == pytest.approx(1 / dt, abs=0.1)


def test_status_shows_runs_absorbed_by_the_rate_limit_apart_from_coalescing():
    from stationflow.status import Snapshot, render, summarise

    snap = Snapshot(taken_ms=0, stations=1, dlq_entries=0, dlq_counts={}, queues={"stationflow": {"queued": 0}},
                    counters={"ingest": {"triggers_fired": 10, "triggers_absorbed": 4, "triggers_rate_limited": 7,
                                         "triggers_deferred": 3},
                              "triggers": {"evaluation_model:released": 2, "SOH_model:released": 1,
                                           "evaluation_model:fired": 10}})
    v = summarise(snap)
    assert (v["triggers_fired"], v["triggers_absorbed"], v["triggers_rate_limited"]) == (10, 4, 7)
    assert (v["runs_deferred"], v["runs_released"]) == (3, 3)
    assert ("triggers: fired 10 (deferred by the rate limit 3, released 3), absorbed by coalescing 4, "
            "absorbed by the rate limit 7") in render(snap)
