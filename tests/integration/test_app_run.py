"""App.run end to end: the example package's two algorithms, registered in code, run in
worker processes started by the App against a real redis-server and broker; one batch
envelope per registered module arrives on its output topic; SIGTERM stops everything."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from kafkautil import (
    CONSUMER_GROUP_TEST_SETTINGS,
    consume_all,
    create_catalogue_topics,
    produce,
    unique_catalogue,
)

from parsers.catalogue import Catalogue, default_catalogue
from stationflow.local import wait_for
from stationflow.settings import dump_toml
from stationflow.testing import sample_messages
from store.windows import WindowStore

pytestmark = [pytest.mark.integration, pytest.mark.heavy(38)]

ROOT = Path(__file__).resolve().parents[2]
STATION = "2000000000000000001"
#: what electricity_price needs for one station (calendar is global); realtime comes last
SETUP = ("environment_calendar", "station_param", "device_meter", "car_price", "device_host_dcdc",
         "device_host_acdc", "device_error")


def _restation(v):
    """Every station's data in the samples, moved onto STATION (one fully equipped station)."""
    if isinstance(v, dict):
        return {k: (STATION if k == "stationId" else _restation(x)) for k, x in v.items()}
    if isinstance(v, list):
        return [_restation(x) for x in v]
    return v


def _values() -> dict[str, bytes]:
    base = default_catalogue()
    return {base.topic(t).alias: orjson.dumps(_restation(json.loads(raw)))
            for t, raw in sample_messages().items() if not base.topic(t).is_module_output}


def _config(tmp_path: Path, cat: Catalogue, redis_url: str, bootstrap: str, prefix: str) -> Path:
    cfg = {
        "prefix": prefix,
        "redis": {"url": redis_url},
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"g-{prefix}",
                  "consumer": dict(CONSUMER_GROUP_TEST_SETTINGS)},
        "topics": {t.alias: {"topic": t.topic} for t in cat.topics},
        "ingest": {"commit_interval_s": 0.2, "poll_timeout_ms": 200},
        "batch": {"sweep_interval_s": 0.2},
    }
    path = tmp_path / "app.toml"
    path.write_text(dump_toml(cfg))
    return path


def _start(cfg: Path, log: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATIONFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen([sys.executable, "-m", "examples.station_app", "--config", str(cfg), *args],
                            cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _feed(bootstrap: str, cat: Catalogue, r, prefix: str) -> None:
    values = _values()
    now = int(time.time() * 1000)
    for alias in SETUP:
        produce(bootstrap, cat.by_alias[alias].topic, [values[alias]], timestamp_ms=now)
    store = WindowStore(r, cat, prefix)
    needed = set(SETUP) - {"environment_calendar", "device_error"}
    wait_for(lambda: needed <= store.present([STATION], needed).get(STATION, set()), 60,
             "the setup windows of the station")
    produce(bootstrap, cat.by_alias["station_realtime_data"].topic, [values["station_realtime_data"]],
            timestamp_ms=int(time.time() * 1000))


def _envelopes(bootstrap: str, cat: Catalogue, module: str) -> list[dict]:
    recs = consume_all(bootstrap, cat.by_module[module].output_topic, 1, timeout_s=90)
    assert recs, f"no envelope on {cat.by_module[module].output_topic}"
    out = []
    for rec in recs:
        env = json.loads(rec.value)
        assert rec.key.decode() == env["batch_id"] and env["module"] == module
        out.append(env)
    return out


def _child_pids(text: str) -> list[int]:
    m = re.search(r"started \d+ ingester\(s\) and \d+ worker\(s\): (.*)", text)
    assert m, text[-3000:]
    return [int(p) for p in re.findall(r"pid (\d+)", m.group(1))]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie not yet reaped by its (exited) parent counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


def test_app_run_uploads_the_registered_algorithms_and_stops_on_sigterm(redis_client, redis_url, kafka_bootstrap,
                                                                          tmp_path):
    cat = unique_catalogue()
    create_catalogue_topics(kafka_bootstrap, cat, partitions=2)
    cfg = _config(tmp_path, cat, redis_url, kafka_bootstrap, "apprun")
    log = tmp_path / "app.log"
    proc = _start(cfg, log, "--ingesters", "1", "--workers", "2")
    try:
        _feed(kafka_bootstrap, cat, redis_client, "apprun")
        lp = _envelopes(kafka_bootstrap, cat, "load_prediction")
        ep = _envelopes(kafka_bootstrap, cat, "electricity_price")
    except BaseException:
        proc.kill()
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(90)
    text = log.read_text()
    assert code == 0, text[-4000:]

    # the code-registered functions ran (not the reference ones) and stationflow added the ids
    last_lp = lp[-1]["results"]
    assert [r["station_id"] for r in last_lp] == [STATION]
    assert last_lp[0]["model"] == "example-v1" and last_lp[0]["last_hour"] == "2025-11-19 11:00:00"
    assert last_lp[0]["guns"] == 4  # the gun union of both sample stations' rows
    assert lp[-1]["stations_count"] == 1
    price = ep[-1]["results"][0]
    assert price["station_id"] == STATION and price["model"] == "example-v1"  # the async algorithm
    assert price["slots_by_class"] == {"ebb": 16, "flat": 18, "peak": 8, "sharp": 6}
    assert price["meter_limit_kw"] == 630.0
    assert "mean_power_kw" in price["evaluation_keys"]  # evaluation_model's output (reference) as a dep
    # the hooks registered in code ran in the workers
    assert re.search(r"batch load_prediction:\S+ uploaded with 1 station result\(s\)", text), text[-3000:]
    assert f"station {STATION}: electricity_price result stored" in text
    assert "registered in code" in text
    # SIGTERM reached every child, and none is left behind
    pids = _child_pids(text)
    assert len(pids) == 3
    assert all(_gone(p) for p in pids), pids


def test_until_idle_runs_the_ported_flat_callback_and_returns_by_itself(redis_client, redis_url, kafka_bootstrap,
                                                                          tmp_path):
    cat = unique_catalogue()
    create_catalogue_topics(kafka_bootstrap, cat, partitions=2)
    cfg = _config(tmp_path, cat, redis_url, kafka_bootstrap, "appidle")
    log = tmp_path / "idle.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATIONFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    values = _values()
    now = int(time.time() * 1000)
    for alias in ("environment_calendar", "station_param", "station_realtime_data"):
        produce(kafka_bootstrap, cat.by_alias[alias].topic, [values[alias]], timestamp_ms=now)
    proc = subprocess.run([sys.executable, "-m", "examples.migration", "--config", str(cfg), "--workers", "1",
                           "--until-idle", "3"], cwd=ROOT, env=env, stdout=log.open("w"),
                          stderr=subprocess.STDOUT, timeout=180)
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    # everything was drained before run() returned: the envelope is already on the topic
    env_ = _envelopes(kafka_bootstrap, cat, "load_prediction")[-1]
    result = env_["results"][0]
    assert result["station_id"] == STATION  # added by stationflow; the callback did not
    assert result["last_hour"] == "2025-11-19 11:00:00"
    # hour 11 of both sample stations merged on STATION (later element wins per gun):
    # guns 03, 01, 02, 04 -> 34.29, 44.17, 2.27, 15.0
    assert result["total_gun_power"] == 95.73 and result["peak_gun"] == "01"
    assert result["grid_capacity"] == 800.0  # the last of the three station_param elements
    assert redis_client.zcard("appidle:batches:due") == 0
    assert all(_gone(p) for p in _child_pids(text))


def test_a_failing_child_stops_the_others_and_gives_its_status(redis_url, kafka_bootstrap, tmp_path, monkeypatch):
    from examples.station_app import algorithms
    from stationflow.app import App

    for k in list(os.environ):
        if k.startswith("STATIONFLOW_"):
            monkeypatch.delenv(k)
    cat = unique_catalogue()
    create_catalogue_topics(kafka_bootstrap, cat, partitions=1)
    app = App({"prefix": "appfail", "redis": {"url": redis_url},
               "kafka": {"bootstrap_servers": kafka_bootstrap, "group_id": "g-appfail"},
               "topics": {t.alias: {"topic": t.topic} for t in cat.topics}})
    app.register("load_prediction", algorithms.forecast_load)
    running = app.start(ingesters=1, workers=1, worker_args=("--processes", "0"))  # a usage error: exit 2
    code = running.wait(stop_timeout_s=60)
    assert code == 2
    ingester = next(c for c in running.children if c.role == "ingest")
    assert ingester.proc.returncode in (0, -signal.SIGTERM)  # asked to stop, and it did
    assert all(c.proc.poll() is not None for c in running.children)


def test_children_stop_when_the_app_is_killed(redis_url, kafka_bootstrap, tmp_path):
    if not sys.platform.startswith("linux") or not shutil.which("setpriv"):
        pytest.skip("parent-death signal needs Linux and setpriv")
    cat = unique_catalogue()
    create_catalogue_topics(kafka_bootstrap, cat, partitions=1)
    log = tmp_path / "killed.log"
    proc = _start(_config(tmp_path, cat, redis_url, kafka_bootstrap, "appkill"), log, "--workers", "1")
    try:
        wait_for(lambda: "started 1 ingester(s)" in log.read_text(), 60, "the App to start its processes")
        pids = _child_pids(log.read_text())
        proc.send_signal(signal.SIGKILL)  # no handler, no atexit: only the parent-death signal remains
        proc.wait(10)
        wait_for(lambda: all(_gone(p) for p in pids), 60, "the children to stop after their parent died")
    finally:
        if proc.poll() is None:
            proc.kill()
