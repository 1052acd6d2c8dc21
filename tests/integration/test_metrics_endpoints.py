"""The Prometheus endpoints of real `stationflow ingest` and `stationflow worker` processes:
what an operator scrapes shows the records, dead letters, runs, jobs and batches of the
traffic we sent, and both processes stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from documented_metrics import documented_metrics
from kafkautil import create_topics, produce, unique_catalogue
from samplefiles import SAMPLES

from stationflow.local import free_port

ROOT = Path(__file__).resolve().parents[2]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        return resp.read().decode()


def _value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def _wait_for(port: int, cond: Any, what: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process exited early with {proc.returncode}: {log.read_text()[-2000:]}"
        try:
            text = _scrape(port)
            if cond(text):
                return text
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; log:\n{log.read_text()[-3000:]}")


def _series(text: str) -> dict[str, list[dict[str, str]]]:
    """family name -> the label sets of its samples (histograms: of their `_count`)."""
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    out: dict[str, list[dict[str, str]]] = {name: [] for name in types}
    for line in text.splitlines():
        m = re.match(r"^(\w+?)(_count)?(?:\{(.*)\})? (\S+)$", line)
        if not m or line.startswith("#"):
            continue
        name = m.group(1) if m.group(1) in types else m.group(1) + (m.group(2) or "")
        if name not in types or (types[name] == "histogram") != bool(m.group(2)):
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        assert float(m.group(4)) >= 0 or name == "stationflow_consumer_lag", line
        out[name].append(labels)
    return out


def _every_documented_series_is_there(scrapes: dict[str, str]) -> None:
    """Each metric of docs/operations.md has a sample with its documented labels in one of the
    processes' scrapes (a documented metric that nothing writes fails here)."""
    got: dict[str, list[dict[str, str]]] = {}
    for text in scrapes.values():
        for name, samples in _series(text).items():
            got.setdefault(name, []).extend(samples)
    missing = []
    for name, doc in documented_metrics().items():
        samples = [s for s in got.get(name, []) if set(s) == set(doc.labels)]
        if not samples:
            missing.append(name)
    assert not missing, f"documented but never written: {missing}"


def test_ingest_and_worker_metrics_show_the_traffic(kafka_bootstrap: str, redis_url: str, redis_client: Any,
                                                    tmp_path: Path) -> None:
    cat = unique_catalogue()
    create_topics(kafka_bootstrap, [t.topic for t in cat.topics], partitions=1)
    topics = "\n".join(f'[topics.{t.alias}]\ntopic = "{t.topic}"' for t in cat.topics)
    cfg = tmp_path / "metrics.toml"
    cfg.write_text(f'prefix = "met"\n[redis]\nurl = "{redis_url}"\n[kafka]\nbootstrap_servers = "{kafka_bootstrap}"\n'
                   f'group_id = "g-metrics"\n[kafka.consumer]\nsession_timeout_ms = 6000\n'
                   f'heartbeat_interval_ms = 1000\n[batch]\nsweep_interval_s = 0.2\n'
                   f'[ingest]\nsummary_interval_s = 0.5\n{topics}\n')  # the lag gauge is refreshed with the summary
    env = dict(os.environ, STATIONFLOW_CONFIG=str(cfg))
    exe = str(Path(sys.executable).parent / "stationflow")
    p_in, p_wk = free_port(), free_port()
    logs = {n: tmp_path / f"{n}.log" for n in ("ingest", "worker")}
    ingest = subprocess.Popen([exe, "ingest", "--from-beginning", "--metrics-port", str(p_in)], env=env,
                              stdout=subprocess.DEVNULL, stderr=logs["ingest"].open("w"), cwd=ROOT)
    worker = subprocess.Popen([exe, "worker", "--metrics-port", str(p_wk)], env=env,
                              stdout=subprocess.DEVNULL, stderr=logs["worker"].open("w"), cwd=ROOT)
    try:
        realtime = cat.by_alias["station_realtime_data"].topic
        param = cat.by_alias["station_param"].topic
        calendar = cat.by_alias["environment_calendar"].topic
        meter = cat.by_alias["device_meter"].topic
        produce(kafka_bootstrap, param, [(SAMPLES / "SCHEDULE-STATION-PARAM.json").read_bytes()])
        produce(kafka_bootstrap, calendar, [(SAMPLES / "SCHEDULE-ENVIRONMENT-CALENDAR.json").read_bytes()])
        produce(kafka_bootstrap, meter, [b'{"stationId": "S1", "meterPower": "1"}'])  # bad_field_type
        produce(kafka_bootstrap, realtime, [(SAMPLES / "SCHEDULE-STATION-REALTIME-DATA.json").read_bytes()])

        text = _wait_for(p_in, lambda t: _value(t, "stationflow_messages_total", topic=realtime) >= 1,
                         "the realtime message in the ingester's metrics", ingest, logs["ingest"])
        assert _value(text, "stationflow_records_total", topic=realtime) >= 2  # two stations' hours
        assert _value(text, "stationflow_messages_total", topic=param) == 1
        text = _wait_for(p_in, lambda t: _value(t, "stationflow_dead_letters_total", topic=meter,
                                                reason="bad_field_type") == 1, "the dead letter", ingest, logs["ingest"])
        assert "# TYPE stationflow_redis_write_seconds histogram" in text
        assert _value(text, "stationflow_redis_write_seconds_count") >= 1
        assert _value(text, "stationflow_commit_seconds_count") >= 1
        assert _value(text, "stationflow_poll_records_count") >= 1
        assert _value(text, "stationflow_poll_records_sum") >= 4
        text = _wait_for(p_in, lambda t: "stationflow_consumer_lag{" in t, "the lag gauge", ingest, logs["ingest"])
        assert _value(text, "stationflow_consumer_lag", topic=realtime) == 0  # caught up

        # the realtime sample triggers load_prediction for stations that also have param + calendar
        text = _wait_for(p_wk, lambda t: _value(t, "stationflow_batches_total", module="load_prediction",
                                                outcome="uploaded") >= 1,
                         "an uploaded load_prediction batch in the worker's metrics", worker, logs["worker"])
        assert _value(text, "stationflow_runs_total", module="load_prediction", outcome="ok") >= 2
        assert _value(text, "stationflow_jobs_total") >= 1
        assert _value(text, "stationflow_algorithm_seconds_count", module="load_prediction") >= 2
        assert _value(text, "stationflow_batch_stations_total", module="load_prediction", status="expected") >= 2
        assert _value(text, "stationflow_queue_depth", queue="stationflow") == 0  # drained
        text_in = _scrape(p_in)
        assert _value(text_in, "stationflow_batches_total", module="load_prediction", outcome="created") >= 1
        assert _value(text_in, "stationflow_ingest_paused") == 0
        _every_documented_series_is_there({"ingest": text_in, "worker": text})
    finally:
        for p in (ingest, worker):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in (ingest, worker)]
    assert codes == [0, 0], (logs["ingest"].read_text()[-2000:], logs["worker"].read_text()[-2000:])
