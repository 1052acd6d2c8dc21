"""`stationflow topics` and `stationflow config check` through click's CliRunner."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from parsers.catalogue import default_catalogue
from stationflow.cli import main
from stationflow.commands.topics_cmd import human_duration
from stationflow.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CLEAN_ENV = {"STATIONFLOW_CONFIG": None, "STATIONFLOW_KAFKA": None, "STATIONFLOW_REDIS_URL": None,
             "STATIONFLOW_LOG_LEVEL": None, "STATIONFLOW_PREFIX": None, "STATIONFLOW_GROUP_ID": None}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env=CLEAN_ENV)


def _body(output: str) -> str:
    """The TOML part of `config check` output (after the comment header)."""
    return "\n".join(line for line in output.splitlines() if not line.startswith("#"))


# ---- topics ------------------------------------------------------------------------------


def test_topics_lists_all_22_topics_aligned(runner: CliRunner) -> None:
    res = runner.invoke(main, ["topics"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split()[:7] == ["TOPIC", "ALIAS", "KIND", "CAP", "TTL", "RETENTION", "USED"]
    rows = lines[1:]
    assert len(rows) == 22
    assert [r.split()[0] for r in rows] == [t.topic for t in default_catalogue().topics]
    # aligned: the ALIAS column starts at the same offset on every line
    col = lines[0].index("ALIAS")
    assert all(r[col - 2:col] == "  " and r[col] != " " for r in rows)
    realtime = next(r for r in rows if r.startswith("SCHEDULE-STATION-REALTIME-DATA "))
    assert realtime.split()[1:6] == ["station_realtime_data", "hourly", "168", "2h", "7d"]
    param = next(r for r in rows if r.startswith("SCHEDULE-STATION-PARAM "))
    assert param.split()[4:6] == ["none", "none"]
    pv_out = next(r for r in rows if r.startswith("MODULE-OUTPUT-PV_PREDICTION "))
    assert pv_out.endswith("operation_optimization, electricity_price")


def test_topics_json(runner: CliRunner) -> None:
    res = runner.invoke(main, ["topics", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert len(rows) == 22
    by_alias = {r["alias"]: r for r in rows}
    assert by_alias["car_order"] == {
        "topic": "SCHEDULE-CAR-ORDER", "alias": "car_order", "kind": "orders", "cap": 120, "ttl_s": 60,
        "retention_s": 604800, "max_bytes": 1048576, "produced_by": None, "runs": None, "consumed": True,
        "used_by": ["evaluation_model", "operation_optimization", "electricity_price", "station_guidance"],
    }
    assert by_alias["SOH_model"]["produced_by"] == "SOH_model"
    assert by_alias["SOH_model"]["consumed"] is False  # local module: its output is not re-ingested
    assert by_alias["device_gun"]["used_by"] == []


def test_topics_honours_global_config(runner: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "sf.toml"
    cfg.write_text('[topics.device_gun]\ntopic = "PLANT-GUN"\nwindow_size = 1\nttl_s = 900\n'
                   '[modules.SOH_model]\nruns = "external"\n')
    res = runner.invoke(main, ["--config", str(cfg), "topics", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["alias"]: r for r in json.loads(res.output)}
    assert rows["device_gun"]["topic"] == "PLANT-GUN"
    assert rows["device_gun"]["ttl_s"] == 900
    assert (rows["SOH_model"]["runs"], rows["SOH_model"]["consumed"]) == ("external", True)
    env_res = CliRunner(env={**CLEAN_ENV, "STATIONFLOW_CONFIG": str(cfg)}).invoke(main, ["topics"])
    assert env_res.exit_code == 0
    assert "PLANT-GUN" in env_res.output and "15m" in env_res.output


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "none"), (60, "60s"), (90, "90s"), (900, "15m"), (7200, "2h"), (3600, "1h"),
    (86400, "1d"), (40 * 86400, "40d"), (1.5, "1.5s"), (5400, "90m"),
])
def test_human_duration(seconds: float | None, text: str) -> None:
    assert human_duration(seconds) == text


# ---- config check ------------------------------------------------------------------------


def test_config_check_defaults_prints_loadable_toml(runner: CliRunner) -> None:
    res = runner.invoke(main, ["config", "check"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("# effective stationflow configuration (secrets masked); source: built-in")
    parsed = tomllib.loads(res.output)
    assert parsed["kafka"]["consumer"]["max_poll_records"] == 10000
    assert Settings.from_dict(parsed) == Settings.from_dict({})


def test_config_check_good_file_masks_secrets(runner: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "prod.toml"
    cfg.write_text("""
prefix = "prod"
[redis]
url = "redis://app:hunter2@redis.internal:6379/2"
[kafka]
bootstrap_servers = ["k1:9093", "k2:9093"]
security_protocol = "SASL_PLAINTEXT"
sasl_mechanism = "SCRAM-SHA-512"
sasl_plain_username = "ingest"
sasl_plain_password = "kafka-pw-123"
max_poll_records = 500
""")
    res = runner.invoke(main, ["config", "check", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "hunter2" not in res.output and "kafka-pw-123" not in res.output
    parsed = tomllib.loads(res.output)
    assert parsed["prefix"] == "prod"
    assert parsed["redis"]["url"] == "redis://app:***@redis.internal:6379/2"
    assert parsed["kafka"]["sasl_plain_password"] == "***"
    assert parsed["kafka"]["bootstrap_servers"] == "k1:9093,k2:9093"
    assert parsed["kafka"]["consumer"]["max_poll_records"] == 500
    assert f"source: {cfg}" in res.output
    # the global --config is honoured the same way
    res2 = runner.invoke(main, ["--config", str(cfg), "config", "check"])
    assert res2.exit_code == 0 and _body(res2.output) == _body(res.output)


def test_config_check_reports_env_overrides(tmp_path: Path) -> None:
    r = CliRunner(env={**CLEAN_ENV, "STATIONFLOW_KAFKA": "envk:9092", "STATIONFLOW_KAFKA_SASL_PASSWORD": "pw9"})
    res = r.invoke(main, ["config", "check"])
    assert res.exit_code == 0, res.output
    assert "# overridden by environment: STATIONFLOW_KAFKA, STATIONFLOW_KAFKA_SASL_PASSWORD" in res.output
    assert tomllib.loads(res.output)["kafka"]["bootstrap_servers"] == "envk:9092"
    assert "pw9" not in res.output


def test_config_check_full_lists_every_topic_and_module(runner: CliRunner) -> None:
    res = runner.invoke(main, ["config", "check", "--full"])
    assert res.exit_code == 0, res.output
    parsed = tomllib.loads(res.output)
    assert len(parsed["topics"]) == 22 and len(parsed["modules"]) == 9
    assert parsed["topics"]["station_param"]["ttl_s"] == "none"
    assert parsed["modules"]["thermal_management"]["deps"] == ["load_prediction", "operation_optimization"]
    assert Settings.from_dict(parsed).catalogue == default_catalogue()


@pytest.mark.parametrize(("text", "message"), [
    ('[kafka]\nbootstrap_server = "k:9092"\n',
     "kafka.bootstrap_server: unknown key; did you mean 'bootstrap_servers'?"),
    ("[queue]\nhigh_water = \"lots\"\n", "queue.high_water: expected an integer, got string 'lots'"),
    ("[modules.load_prediction]\ndeps = [\"thermal_management\"]\n", "dependency cycle: "),
    ("[kafka\n", "invalid TOML"),
])
def test_config_check_bad_file_exits_2(runner: CliRunner, tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    res = runner.invoke(main, ["config", "check", str(cfg)])
    assert res.exit_code == 2
    assert res.stdout == ""
    assert res.stderr.startswith(f"config error: {cfg}: ")
    assert message in res.stderr


def test_config_check_missing_file_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(main, ["config", "check", str(tmp_path / "nope.toml")])
    assert res.exit_code == 2
    assert "config error: config file not found:" in res.stderr
    res = runner.invoke(main, ["--config", str(tmp_path / "nope.toml"), "topics"])
    assert res.exit_code == 2
    assert "config error: config file not found:" in res.stderr


def test_config_check_example_file(runner: CliRunner) -> None:
    res = runner.invoke(main, ["config", "check", str(ROOT / "stationflow.example.toml")])
    assert res.exit_code == 0, res.stderr
    assert tomllib.loads(res.output)["topics"]["station_realtime_data"]["window_size"] == 168
