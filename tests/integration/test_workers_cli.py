"""`stationflow worker --burst` and plain `rq worker` run station jobs from settings alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from kafkautil import consume_all, create_topics, unique_catalogue
from samplefiles import SAMPLES

from ingest.triggers import plan_runs
from parsers.envelopes import parse_message
from parsers.records import Source
from store.tracker import BatchTracker
from store.windows import WindowStore
from workers.scheduling import ScheduleOptions, schedule

ROOT = Path(__file__).resolve().parents[2]
STATIONS = ["3000000000000000001", "3000000000000000002"]


def _config(tmp_path: Path, redis_url: str, bootstrap: str, cat) -> Path:
    lines = ['prefix = "sfcli"', f'[redis]\nurl = "{redis_url}"', f'[kafka]\nbootstrap_servers = "{bootstrap}"']
    for t in cat.topics:
        lines.append(f'[topics.{t.alias}]\ntopic = "{t.topic}"')
    path = tmp_path / "stationflow.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _prepare(r, cat) -> str:
    store = WindowStore(r, cat, "sfcli")
    now = int(time.time() * 1000)
    msgs = []
    param = json.loads((SAMPLES / "SCHEDULE-STATION-PARAM.json").read_text())[0]
    values = [
        ("station_param", [{**param, "stationId": s} for s in STATIONS]),
        ("environment_calendar", json.loads((SAMPLES / "SCHEDULE-ENVIRONMENT-CALENDAR.json").read_text())),
        ("station_realtime_data", {"realTimeData": [
            {"stationId": s, "sendTime": "2025-11-19 08:00:00", "outputPowerPerStationAvg": 40.0 + i,
             "gunPower": {"gunNo": ["01"], "outputPowerPerGunAvg": [40.0 + i], "outputPowerPerGunMax": [80.0]}}
            for i, s in enumerate(STATIONS)]}),
    ]
    for offset, (alias, value) in enumerate(values):
        spec = cat.topic(alias)
        msgs.append((Source(spec.topic, 0, offset, now - 1000 + offset), parse_message(spec, orjson.dumps(value)).records))
    triggers = store.apply(msgs[:2], now).triggers  # setup, not scheduled
    assert triggers
    triggers = store.apply(msgs[2:], now).triggers
    plan = plan_runs(triggers, cat, lambda s, n: store.present(s, n, now), store.stations)
    res = schedule(r, cat, plan.runs, ScheduleOptions(prefix="sfcli"))
    assert len(res.enqueued) == 1  # both stations in one group job
    return next(x.batch_id for x in plan.runs if x.module == "load_prediction")


@pytest.mark.parametrize("how", ["stationflow", "rq"])
def test_worker_command_runs_jobs_and_uploads(how, redis_client, redis_url, kafka_bootstrap, tmp_path):
    cat = unique_catalogue()
    create_topics(kafka_bootstrap, [t.topic for t in cat.output_topics], partitions=1)
    cfg = _config(tmp_path, redis_url, kafka_bootstrap, cat)
    batch = _prepare(redis_client, cat)
    env = {**os.environ, "STATIONFLOW_CONFIG": str(cfg), "PYTHONPATH": str(ROOT)}
    if how == "stationflow":
        cmd = [str(Path(sys.executable).parent / "stationflow"), "worker", "--burst"]
    else:
        cmd = [str(Path(sys.executable).parent / "rq"), "worker", "--burst", "--url", redis_url,
               "--serializer", "rq.serializers.JSONSerializer", "--worker-class", "workers.rqworker.StationWorker",
               "stationflow"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    b = BatchTracker(redis_client, "sfcli").get(batch)
    assert b["state"] == "uploaded" and b["ok"] == "2", (b, proc.stderr[-2000:])
    recs = consume_all(kafka_bootstrap, cat.by_module["load_prediction"].output_topic, 1)
    env_ = json.loads(recs[0].value)
    assert [x["station_id"] for x in env_["results"]] == STATIONS and recs[0].key.decode() == batch
