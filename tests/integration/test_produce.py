"""`stationflow produce` against a real Kafka-compatible broker: everything sent arrives,
on the configured topic names, unkeyed, with the simulated timestamps."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from stationflow.cli import main
from stationflow.traffic import INPUT_ALIASES, Traffic
from tests.kafkautil import consume_all, unique_catalogue

pytestmark = pytest.mark.integration

START = 1_763_524_800_000


def _config(tmp_path: Path, names: dict[str, str]) -> Path:
    p = tmp_path / "stationflow.toml"
    p.write_text("".join(f'[topics.{alias}]\ntopic = "{name}"\n\n' for alias, name in names.items()))
    return p


def test_cli_produce_count_arrives_on_configured_topics(kafka_bootstrap: str, tmp_path: Path) -> None:
    cat = unique_catalogue()
    names = {a: cat.by_alias[a].topic for a in INPUT_ALIASES}
    cfg = _config(tmp_path, names)
    n = 1500
    result = CliRunner().invoke(main, [
        "--config", str(cfg), "produce", "--bootstrap", kafka_bootstrap, "--stations", "3", "--seed", "7",
        "--start", str(START), "--speed", "0", "--count", str(n), "--bad-rate", "0.02",
        "--create-topics", "--partitions", "2", "--progress", "60",
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"{n} messages in" in result.output

    expected = Traffic(stations=3, seed=7, start_ms=START, catalogue=cat, bad_rate=0.02).take(n)
    want: dict[str, Counter[tuple[bytes, int]]] = {}
    for m in expected:
        want.setdefault(m.topic, Counter())[(m.value, m.timestamp_ms)] += 1
    assert len(want) >= 10  # the first seconds cover most topics (meter and faults come later)
    for topic, msgs in want.items():
        got = consume_all(kafka_bootstrap, topic, min_count=sum(msgs.values()), timeout_s=30)
        assert Counter((r.value, r.timestamp) for r in got) == msgs, topic
        assert all(r.key is None for r in got)
        assert {r.partition for r in got} <= {0, 1}
        # the summary line of every topic reports what arrived
        line = next(x for x in result.output.splitlines() if x.startswith(topic + " "))
        assert int(line.split()[1]) == sum(msgs.values())


def test_cli_produce_topic_filter_and_duration(kafka_bootstrap: str, tmp_path: Path) -> None:
    cat = unique_catalogue()
    names = {a: cat.by_alias[a].topic for a in INPUT_ALIASES}
    cfg = _config(tmp_path, names)
    result = CliRunner().invoke(main, [
        "--config", str(cfg), "produce", "--bootstrap", kafka_bootstrap, "--stations", "2", "--seed", "1",
        "--start", str(START), "--speed", "0", "--duration", "2", "--rate", "100",
        "--topics", "device_meter,device_storage", "--create-topics", "--partitions", "1",
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    meter = consume_all(kafka_bootstrap, names["device_meter"], min_count=1, timeout_s=20)
    storage = consume_all(kafka_bootstrap, names["device_storage"], min_count=1, timeout_s=20)
    sent = len(meter) + len(storage)
    assert 1 <= sent <= 2 * 100 + 1  # the rate cap holds over two seconds
    total = next(x for x in result.output.splitlines() if x.startswith("total "))
    assert int(total.split()[1]) == sent
    assert consume_all(kafka_bootstrap, names["car_order"], min_count=1, timeout_s=2) == []


def test_cli_produce_json_summary_matches_what_arrived(kafka_bootstrap: str, tmp_path: Path) -> None:
    import json

    cat = unique_catalogue()
    names = {a: cat.by_alias[a].topic for a in INPUT_ALIASES}
    cfg = _config(tmp_path, names)
    result = CliRunner().invoke(main, [
        "--config", str(cfg), "produce", "--bootstrap", kafka_bootstrap, "--stations", "2", "--seed", "3",
        "--start", str(START), "--speed", "0", "--count", "40", "--topics", "device_meter",
        "--create-topics", "--partitions", "1", "--json",
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    d = json.loads(result.stdout)  # nothing but the object: no progress lines
    topic = names["device_meter"]
    assert d["sent"] == 40 and d["errors"] == 0 and set(d["per_topic"]) == {topic}
    assert len(consume_all(kafka_bootstrap, topic, min_count=40, timeout_s=20)) == d["per_topic"][topic]["sent"]
