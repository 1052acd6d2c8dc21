"""`stationflow parse TOPIC [FILE|-]`: JSON lines out, exit 2 on any dead-letter reason."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from samplefiles import SAMPLES

from stationflow.cli import main

pytestmark = pytest.mark.unit



def invoke(*args: str, stdin: bytes | None = None):
    runner = CliRunner()
    return runner.invoke(main, ["parse", *args], input=stdin, env={"STATIONFLOW_CONFIG": ""},
                         catch_exceptions=False)


def lines(output: str) -> list[dict]:
    return [json.loads(x) for x in output.splitlines() if x.strip()]


def test_good_file_by_topic_name() -> None:
    r = invoke("SCHEDULE-STATION-PARAM", str(SAMPLES / "SCHEDULE-STATION-PARAM.json"))
    assert r.exit_code == 0
    out = lines(r.output)
    assert [(x["station_id"], x["alias"], x["op"], x["key"]) for x in out] == [
        ("1053405539402387456", "station_param", "latest", None),
        ("1173980655843938304", "station_param", "latest", None),
        ("1881540927845654529", "station_param", "latest", None)]
    assert out[0]["payload"]["gridCapacity"] == 630.0


def test_stdin_and_alias() -> None:
    r = invoke("device_host_dcdc", "-", stdin=(SAMPLES / "SCHEDULE-DEVICE-HOST-DCDC.json").read_bytes())
    assert r.exit_code == 0
    [rec] = lines(r.output)
    assert (rec["station_id"], rec["op"], rec["key"]) == ("1881540927845654529", "devices", "42000000001900")
    assert len(rec["payload"]["dcdcPower"]) == 20


def test_bad_message_prints_error_and_exits_2() -> None:
    r = invoke("SCHEDULE-DEVICE-METER", str(SAMPLES / "bad" / "07_nan_infinity.json"))
    assert r.exit_code == 2
    assert lines(r.output) == [{"error": "non_finite_number",
                                "message": "SCHEDULE-DEVICE-METER: literal NaN is not a finite JSON number",
                                "element_index": None}]


def test_partial_rejection_prints_records_and_errors_exit_2() -> None:
    r = invoke("station_realtime_data", str(SAMPLES / "bad" / "16_realtime_one_bad_element.json"))
    assert r.exit_code == 2
    out = lines(r.output)
    assert [x.get("station_id") for x in out if "station_id" in x] == ["1173980655843938304", "1881540927845654529"]
    errors = [x for x in out if "error" in x]
    assert [(e["error"], e["element_index"]) for e in errors] == [("missing_station_id", 1)]


def test_unknown_topic_is_a_usage_error() -> None:
    r = invoke("SCHEDULE-NOPE", "-", stdin=b"{}")
    assert r.exit_code == 2
    assert "unknown topic" in r.output
