"""compose.yaml stays in step with the code: topics from the catalogue, commands and options
the CLI really has, environment variables the settings really read."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from parsers.catalogue import default_catalogue
from stationflow.cli import COMMANDS, main

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _argv(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def test_services_present(compose: dict[str, Any]) -> None:
    s = _services(compose)
    assert {"redis", "kafka", "topic-init", "ingest", "worker"} <= set(s)
    for name in ("ingest", "worker"):
        assert s[name]["deploy"]["replicas"] >= 1
        assert s[name]["build"]["context"] == "."
        assert s[name]["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
        assert s[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_redis_persists_and_never_evicts(compose: dict[str, Any]) -> None:
    redis = _services(compose)["redis"]
    assert redis["image"].startswith("redis:7")
    argv = _argv(redis)
    opts = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert argv[0] == "redis-server"
    assert opts["--appendonly"] == "yes"
    assert opts["--maxmemory-policy"] == "noeviction"
    vol = redis["volumes"][0].split(":")
    assert vol[1] == "/data" and vol[0] in compose["volumes"]


def test_kafka_is_single_node_kraft_with_matching_listeners(compose: dict[str, Any]) -> None:
    s = _services(compose)
    kafka = s["kafka"]
    env = kafka["environment"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env["KAFKA_LOG_DIRS"] == kafka["volumes"][0].split(":")[1]
    # the broker accepts the largest value a topic may carry (spec §6.7)
    biggest = max(t.max_bytes for t in default_catalogue().topics)
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) >= biggest
    for name in ("ingest", "worker"):
        app_env = s[name]["environment"]
        assert app_env["STATIONFLOW_KAFKA"] == "kafka:9092"
        assert re.fullmatch(r"redis://redis:6379/\d+", app_env["STATIONFLOW_REDIS_URL"])


def test_topic_init_creates_exactly_the_catalogue_topics(compose: dict[str, Any]) -> None:
    init = _services(compose)["topic-init"]
    cat = default_catalogue()
    env = init["environment"]
    assert env["INPUT_TOPICS"].split() == [t.topic for t in cat.input_topics]
    assert env["OUTPUT_TOPICS"].split() == [t.topic for t in cat.output_topics]
    assert len(env["INPUT_TOPICS"].split() + env["OUTPUT_TOPICS"].split()) == 22
    script = _argv(init)[0]
    assert "kafka-topics.sh" in script
    # the loop reads the lists at run time: "$$" so compose leaves "$" for the shell, never a bare "$"
    assert "$$INPUT_TOPICS" in script and "$$OUTPUT_TOPICS" in script
    assert re.search(r"(?<!\$)\$(?!\$)", script.replace("$$", "")) is None
    assert "--if-not-exists" in script
    assert init["image"] == _services(compose)["kafka"]["image"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init.get("restart") == "no"


def _stationflow_services(compose: dict[str, Any]) -> list[tuple[str, list[str]]]:
    out = []
    for name, svc in _services(compose).items():
        argv = _argv(svc)
        if argv and argv[0] == "stationflow":
            out.append((name, argv[1:]))
    return out


def test_every_stationflow_command_is_known() -> None:
    comp = yaml.safe_load((ROOT / "compose.yaml").read_text())
    used = _stationflow_services(comp)
    assert {a[0] for _, a in used} >= {"ingest", "worker"}
    for _, argv in used:
        assert argv[0] in COMMANDS, argv


@pytest.mark.parametrize(
    "service", [n for n, _ in _stationflow_services(yaml.safe_load((ROOT / "compose.yaml").read_text()))]
)
def test_stationflow_options_parse(compose: dict[str, Any], service: str) -> None:
    argv = dict(_stationflow_services(compose))[service]
    ctx = click.Context(main, info_name="stationflow")
    cmd = main.get_command(ctx, argv[0])
    assert cmd is not None, f"compose.yaml runs an unknown command: stationflow {argv[0]}"
    # make_context parses and type-checks every option without running the command
    sub = cmd.make_context(argv[0], list(argv[1:]), parent=ctx)
    assert sub.command is cmd


def test_environment_variables_are_ones_the_settings_read(compose: dict[str, Any]) -> None:
    from stationflow.commands.console_cmd import TOKEN_ENV
    from stationflow.settings import ENV_OVERRIDES

    known = {e.var for e in ENV_OVERRIDES} | {"STATIONFLOW_CONFIG", "STATIONFLOW_LOG_LEVEL", TOKEN_ENV}
    used = set()
    for svc in _services(compose).values():
        env = svc.get("environment") or {}
        names = env if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        used |= {n for n in names if n.startswith("STATIONFLOW_")}
    assert used, "no STATIONFLOW_* variables in compose.yaml"
    assert used <= known, used - known


def test_dockerfile_installs_every_package(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in include:
        pkg = pattern.rstrip("*")
        assert re.search(rf"^COPY {pkg} {pkg}$", dockerfile, re.M), pkg
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.M))
    for svc in _services(compose).values():
        build = svc.get("build")
        if isinstance(build, dict) and "target" in build:
            assert build["target"] in targets


def test_console_binds_all_addresses_only_with_a_token(compose: dict[str, Any]) -> None:
    from stationflow.commands.console_cmd import TOKEN_ENV

    con = _services(compose)["console"]
    argv = _argv(con)
    assert argv[:2] == ["stationflow", "console"] and argv[argv.index("--host") + 1] == "0.0.0.0"
    assert con["environment"][TOKEN_ENV] == "${STATIONFLOW_CONSOLE_TOKEN:-}"
    assert con["ports"] == [f"127.0.0.1:{argv[argv.index('--port') + 1]}:{argv[argv.index('--port') + 1]}"]
    assert "'.[console]'" in (ROOT / "Dockerfile").read_text()  # the app image has the console's extra


def test_dashboard_reads_json_jobs(compose: dict[str, Any]) -> None:
    dash = _services(compose)["dashboard"]
    argv = _argv(dash)
    assert argv[0] == "rq-dashboard" and "--json" in argv  # workers enqueue with the JSON serializer
    assert "redis://redis:6379/" in " ".join(argv)


def test_cluster_profile_creates_a_cluster_and_points_the_processes_at_it(compose: dict[str, Any]) -> None:
    s = _services(compose)
    nodes = [f"redis-node-{i}" for i in range(1, 7)]
    for n in nodes:
        assert s[n]["profiles"] == ["cluster"] and s[n]["image"].startswith("redis:7")
        cmd = " ".join(_argv(s[n]))
        assert "--cluster-enabled yes" in cmd and "--maxmemory-policy noeviction" in cmd
    init = " ".join(_argv(s["cluster-init"]))
    assert "redis-cli --cluster create" in init and "--cluster-replicas 1" in init
    assert all(f"{n}:6379" in init for n in nodes)
    assert set(s["cluster-init"]["depends_on"]) == set(nodes)
    for name in ("ingest-cluster", "worker-cluster"):
        env = s[name]["environment"]
        url = env["STATIONFLOW_REDIS_URL"]
        assert url.startswith("redis+cluster://")
        assert {h.split(":")[0] for h in url[len("redis+cluster://"):].strip("/").split(",")} <= set(nodes)
        assert env["STATIONFLOW_QUEUE_REDIS_URL"].startswith("redis://queue-redis:")
        assert s[name]["depends_on"]["cluster-init"]["condition"] == "service_completed_successfully"
        # the settings accept what compose gives the processes
        from stationflow.settings import Settings

        settings = Settings.load(env={k: str(v) for k, v in env.items()})
        assert settings.redis.is_cluster and settings.queue.redis_url
