"""Every command against every operational failure ends in one `error: ...` line on stderr,
a non-zero exit status and no traceback; `-v` shows the traceback. Real processes (the
console entry point, as an operator runs it) against real servers that refuse or are absent."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from stationflow.local import free_port, start_redis
from store.dlq import DeadLetter, DeadLetters

pytestmark = [pytest.mark.heavy(78)]  # ~50 command x failure cases as real processes

PREFIX = "sferr"
ENTRY = [sys.executable, "-c", "import sys; from stationflow.cli import main; sys.exit(main())"]

#: command -> argv (after the global options); the failures each is run against are below
COMMANDS = {
    "status": ["status"],
    "inspect": ["inspect", "S1"],
    "inspect-keys": ["inspect", "--keys"],
    "dlq-list": ["dlq", "list"],
    "dlq-show": ["dlq", "show", "1-0"],
    "dlq-replay": ["dlq", "replay", "--all"],
    "worker": ["worker", "--burst"],
    "worker-pool": ["worker", "--burst", "-n", "2"],
    "ingest": ["ingest", "--until-idle", "1"],
    "produce": ["produce", "--duration", "1", "--stations", "2"],
    "config-check": ["config", "check"],
    "topics": ["topics"],
    "demo": ["demo", "--duration", "1", "--stations", "2"],
}
USES_REDIS = ("status", "inspect", "inspect-keys", "dlq-list", "dlq-show", "dlq-replay", "worker", "worker-pool",
              "ingest", "demo")
if importlib.util.find_spec("uvicorn") is not None:  # the console extra is installed: its command too
    COMMANDS["console"] = ["console", "--port", "0"]
    USES_REDIS += ("console",)
USES_KAFKA = ("dlq-replay", "ingest", "produce", "demo")
CASES = ([("redis_down", c) for c in USES_REDIS] + [("wrong_password", c) for c in USES_REDIS]
         + [("kafka_down", c) for c in USES_KAFKA] + [("missing_config", c) for c in COMMANDS]
         + [("bad_id", ["dlq", "show", "notanid"]), ("bad_id", ["dlq", "replay", "notanid", "--dry-run"]),
            ("bad_id", ["dlq", "replay", "17-x"])])


@pytest.fixture(scope="module")
def guarded_redis():
    """A redis-server of this module that wants a password."""
    server = start_redis(password="right-password")
    try:
        yield server
    finally:
        server.close()


def _run(argv: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STATIONFLOW_")}
    return subprocess.run([*ENTRY, *argv], capture_output=True, text=True, timeout=timeout, env={**base, **env})


def _argv(command: str | list[str], failure: str, redis_url: str, kafka: str) -> list[str]:
    argv = list(COMMANDS[command]) if isinstance(command, str) else list(command)
    if command == "demo":  # the demo takes its servers as options, not from the settings
        argv += ["--redis-url", redis_url, "--kafka", kafka]
    return argv


@pytest.mark.parametrize(("failure", "command"), CASES,
                         ids=[f"{f}-{c if isinstance(c, str) else '-'.join(c)}" for f, c in CASES])
def test_one_line_no_traceback(failure, command, redis_url, redis_client, kafka_bootstrap, guarded_redis, tmp_path):
    closed = f"127.0.0.1:{free_port()}"
    env = {"STATIONFLOW_REDIS_URL": redis_url, "STATIONFLOW_KAFKA": kafka_bootstrap, "STATIONFLOW_PREFIX": PREFIX,
           "STATIONFLOW_GROUP_ID": f"g-err-{os.getpid()}"}
    if failure == "redis_down":
        env["STATIONFLOW_REDIS_URL"] = f"redis://{closed}/0"
    elif failure == "wrong_password":
        env["STATIONFLOW_REDIS_URL"] = guarded_redis.url.replace("right-password", "wrong-password")
        assert env["STATIONFLOW_REDIS_URL"] != guarded_redis.url
    elif failure == "kafka_down":
        env["STATIONFLOW_KAFKA"] = closed
        # fail in 3 s, not the client's 30 s; a config file, since the demo passes its children
        # only STATIONFLOW_CONFIG of the environment
        quick = tmp_path / "quick-kafka.toml"
        quick.write_text("[kafka]\nbootstrap_timeout_ms = 3000\n")
        env["STATIONFLOW_CONFIG"] = str(quick)
        # something to replay, so that `dlq replay --all` gets as far as the broker
        DeadLetters(redis_client, PREFIX).add([DeadLetter("SCHEDULE-CAR-ORDER", 0, 1, 1, "bad_json", "cut", b"{")])
    argv = _argv(command, failure, env["STATIONFLOW_REDIS_URL"], env["STATIONFLOW_KAFKA"])
    if failure == "missing_config":
        argv = ["--config", str(tmp_path / "missing.toml"), *argv]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    res = _run(argv, {**env, "TMPDIR": str(scratch)})
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode not in (0, None), (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    label = "config error: " if failure == "missing_config" else "error: "
    assert len(lines) == 1 and lines[0].startswith(label), res.stderr
    expected = {"redis_down": ("Redis unavailable", closed), "wrong_password": ("authentication failed", "***"),
                "kafka_down": ("cannot reach Kafka", "KafkaTimeoutError: Unable"),
                "missing_config": ("config file not found", "missing.toml"), "bad_id": ("not a dead-letter id",)}
    for word in expected[failure]:
        assert word in lines[0], lines[0]
    assert "wrong-password" not in res.stderr + res.stdout  # the password is never printed
    assert "kafka." not in res.stderr  # the Kafka client's retry logging stays quiet
    assert res.returncode == (2 if failure in ("missing_config", "bad_id") else 1)
    assert list(scratch.iterdir()) == []  # the demo started nothing worth keeping: no scratch folder left


def test_debug_shows_the_traceback(tmp_path):
    closed = f"127.0.0.1:{free_port()}"
    for flag in ("-v", "--debug"):
        res = _run([flag, "status"], {"STATIONFLOW_REDIS_URL": f"redis://{closed}/0"})
        assert res.returncode == 1 and "Traceback (most recent call last)" in res.stderr
        assert "StoreUnavailable" in res.stderr


def test_a_bug_keeps_its_traceback(tmp_path):
    """Only known operational failures become one line: anything else is a bug and says where."""
    from click.testing import CliRunner

    from stationflow.cli import main, one_line

    assert one_line(ZeroDivisionError("x")) is None
    res = CliRunner().invoke(main, ["parse", "car_order", str(tmp_path / "nope.json")])
    assert res.exit_code == 2  # a usage error stays click's own


def test_status_with_kafka_down_still_shows_redis_and_says_why_there_is_no_lag(redis_url, redis_client):
    closed = f"127.0.0.1:{free_port()}"
    res = _run(["status"], {"STATIONFLOW_REDIS_URL": redis_url, "STATIONFLOW_KAFKA": closed,
                            "STATIONFLOW_PREFIX": PREFIX})
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stdout + res.stderr and res.stderr.strip() == ""
    assert res.stdout.splitlines()[0].startswith(f"redis {redis_url} (prefix {PREFIX}) · kafka {closed}")
    assert "KafkaTimeoutError" in res.stdout


def test_kafka_client_logging_is_back_with_debug_log_level(redis_url):
    """Quiet by default (the kafka_down cases above end in exactly one line); DEBUG shows it."""
    closed = f"127.0.0.1:{free_port()}"
    env = {"STATIONFLOW_REDIS_URL": redis_url, "STATIONFLOW_KAFKA": closed,
           "STATIONFLOW_KAFKA_BOOTSTRAP_TIMEOUT_MS": "3000"}
    loud = _run(["--log-level", "DEBUG", "produce", "--duration", "1", "--stations", "1"], env)
    assert "kafka." in loud.stderr and loud.returncode == 1
