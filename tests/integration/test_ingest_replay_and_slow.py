"""Against a real broker and redis-server: a new consumer group re-reading everything creates
no batch and no job (replay marks), and slow topics start from the earliest offset for a group
without committed offsets even with `auto_offset_reset = "latest"` (spec §6.9)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from kafkautil import CONSUMER_GROUP_TEST_SETTINGS, create_topics, produce, unique_catalogue
from samplefiles import SAMPLES

from parsers.catalogue import Catalogue
from stationflow import runtime
from stationflow.settings import Settings
from store.tracker import BatchTracker
from store.windows import WindowStore
from workers.scheduling import station_queue

pytestmark = [pytest.mark.heavy(19)]


S = "4100000000000000001"


def _settings(cat: Catalogue, bootstrap: str, redis_url: str, group: str, **consumer: Any) -> Settings:
    return Settings.from_dict({
        "redis": {"url": redis_url},
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group,
                  "consumer": {**CONSUMER_GROUP_TEST_SETTINGS, **consumer}},
        "topics": {t.alias: {"topic": t.topic} for t in cat.topics},
        "ingest": {"commit_interval_s": 0.2},
    })


def _ingest(settings: Settings, until_idle_s: float = 3.0) -> Any:
    svc = runtime.build_ingester(settings, until_idle_s=until_idle_s)
    assert svc.ingester.run() == 0
    return svc


def _messages(station: str) -> dict[str, list[bytes]]:
    param = json.loads((SAMPLES / "SCHEDULE-STATION-PARAM.json").read_text())[0]
    rt = [json.dumps({"realTimeData": [
        {"stationId": station, "sendTime": f"2025-11-19 08:0{i}:00", "outputPowerPerStationAvg": 40.0 + i,
         "gunPower": {"gunNo": ["01"], "outputPowerPerGunAvg": [40.0], "outputPowerPerGunMax": [80.0]}}]}).encode()
          for i in range(3)]
    return {"station_param": [json.dumps([{**param, "stationId": station}]).encode()],
            "environment_calendar": [(SAMPLES / "SCHEDULE-ENVIRONMENT-CALENDAR.json").read_bytes()],
            "station_realtime_data": rt}


def _produce_all(cat: Catalogue, bootstrap: str, station: str = S) -> None:
    create_topics(bootstrap, [t.topic for t in cat.topics], partitions=1)
    for alias, values in _messages(station).items():
        produce(bootstrap, cat.by_alias[alias].topic, values, partition=0)


def test_a_new_group_replaying_everything_creates_nothing(kafka_bootstrap: str, redis_client: Any,
                                                         redis_url: str) -> None:
    cat = unique_catalogue()
    _produce_all(cat, kafka_bootstrap)
    first = _settings(cat, kafka_bootstrap, redis_url, "g-first")
    _ingest(first)
    created = BatchTracker(redis_client).counters()["created"]
    jobs = station_queue(redis_client, first.queue.name).count
    assert created >= 1 and jobs == 1
    svc = _ingest(_settings(cat, kafka_bootstrap, redis_url, "g-second"))  # re-reads every topic
    assert svc.stats.total("ingest", "messages") == 5
    assert BatchTracker(redis_client).counters()["created"] == created
    assert station_queue(redis_client, first.queue.name).count == jobs
    assert svc.stats.total("ingest", "runs_planned") == 0
    assert svc.stats.total("ingest", "triggers_replayed") >= 5


def test_slow_topics_start_from_earliest_with_latest_reset(kafka_bootstrap: str, redis_client: Any,
                                                          redis_url: str, caplog: Any) -> None:
    cat = unique_catalogue()
    station = "4100000000000000002"
    _produce_all(cat, kafka_bootstrap, station)
    settings = _settings(cat, kafka_bootstrap, redis_url, "g-latest", auto_offset_reset="latest")
    with caplog.at_level(logging.INFO):
        svc = _ingest(settings)
    present = WindowStore(redis_client, settings.catalogue).present(
        [station], ["station_param", "environment_calendar"])[station]
    assert set(present) == {"station_param", "environment_calendar"}  # each one message, at offset 0
    # realtime is fast: it starts from "latest", not from its first message (Tansu answers
    # "latest" with the base offset of the last produced batch + 1, so some of it is read)
    assert svc.stats.total(f"topic:{cat.by_alias['station_realtime_data'].topic}", "messages") < 3
    starts = [r.message for r in caplog.records if "start from the earliest offset" in r.message]
    assert len(starts) == 1 and "latest applies to the fast topics" in starts[0]
