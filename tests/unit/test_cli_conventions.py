"""What the README promises of every command: `--json` on each command that prints a result
(walked from `stationflow --help`, so a new command must take a side), and `config check`
importing every algorithm and hook path before a roll-out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from stationflow.cli import main

pytestmark = pytest.mark.unit

CLEAN_ENV = {"STATIONFLOW_CONFIG": None, "STATIONFLOW_KAFKA": None, "STATIONFLOW_REDIS_URL": None,
             "STATIONFLOW_HOOKS_RESULT_HANDLER": None, "STATIONFLOW_HOOKS_BATCH_UPLOAD_HANDLER": None,
             "STATIONFLOW_MODULES": None}
#: commands that run until stopped or write their result elsewhere, and why
NO_JSON = {
    "ingest": "a service: logs, no result",
    "worker": "a service: logs, no result",
    "demo": "its result is --json-summary FILE (the terminal shows progress)",
    "bench": "its result is bench/report.md",
    "console": "a service: serves the web console (its /api/... pages are the JSON)",
    "parse": "prints JSON lines already",
}


def _leaves(group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()) -> dict[str, click.Command]:
    out = {}
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        if isinstance(cmd, click.Group):
            out.update(_leaves(cmd, ctx, (*prefix, name)))
        else:
            out[" ".join((*prefix, name))] = cmd
    return out


def test_every_command_that_prints_a_result_takes_json() -> None:
    runner = CliRunner(env=CLEAN_ENV)
    listed = runner.invoke(main, ["--help"]).output
    tops = set(re.findall(r"^  ([a-z]+)\s", listed.split("Commands:")[1], re.M))
    with click.Context(main) as ctx:
        leaves = _leaves(main, ctx)
    assert {name.split()[0] for name in leaves} == tops  # the walk covers what --help lists
    for name in leaves:
        top = name.split()[0]
        help_text = runner.invoke(main, [*name.split(), "--help"]).output
        if top in NO_JSON:
            continue
        assert re.search(r"--json\b", help_text), f"`stationflow {name}` prints a result but has no --json"
    assert set(NO_JSON) <= tops


@pytest.mark.parametrize("args", [["config", "check", "--json"], ["topics", "--json"]])
def test_json_of_commands_without_servers_parses(args: list[str]) -> None:
    res = CliRunner(env=CLEAN_ENV).invoke(main, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)


def test_config_check_json_shows_the_effective_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('prefix = "p1"\n[redis]\nurl = "redis://:secret@h:1/0"\n')
    res = CliRunner(env={**CLEAN_ENV, "STATIONFLOW_GROUP_ID": "g7"}).invoke(main, ["config", "check", str(cfg),
                                                                                  "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["source"] == str(cfg) and d["env_applied"] == ["STATIONFLOW_GROUP_ID"]
    assert d["settings"]["prefix"] == "p1" and "secret" not in res.stdout


def test_config_check_imports_every_algorithm_and_hook_path(tmp_path: Path, monkeypatch) -> None:
    pkg = tmp_path / "okpkg.py"
    pkg.write_text("def fn(station_id, module_input):\n    return {}\n\nnot_callable = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tmp_path / "c.toml"
    cfg.write_text('[modules.load_prediction]\nalgorithm = "okpkg:fn"\n'
                   '[modules.pv_prediction]\nalgorithm = "no_such_package_xyz.mod:fn"\n'
                   '[modules.SOH_model]\nalgorithm = "okpkg:missing"\n'
                   '[hooks]\nresult_handler = "okpkg:not_callable"\nbatch_upload_handler = "okpkg:fn"\n')
    res = CliRunner(env=CLEAN_ENV).invoke(main, ["config", "check", str(cfg)])
    assert res.exit_code == 2 and res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 3 and all(x.startswith("config error: ") for x in lines), res.stderr
    assert "modules.pv_prediction.algorithm = 'no_such_package_xyz.mod:fn'" in res.stderr
    assert "modules.SOH_model.algorithm = 'okpkg:missing'" in res.stderr
    assert "hooks.result_handler = 'okpkg:not_callable'" in res.stderr and "not callable" in res.stderr
    assert "load_prediction" not in res.stderr and "batch_upload_handler" not in res.stderr

    cfg.write_text('[modules.load_prediction]\nalgorithm = "okpkg:fn"\n[hooks]\nresult_handler = "okpkg:fn"\n')
    assert CliRunner(env=CLEAN_ENV).invoke(main, ["config", "check", str(cfg)]).exit_code == 0


def test_config_check_of_the_defaults_passes() -> None:
    """The built-in algorithms (workers/reference.py) all import."""
    res = CliRunner(env=CLEAN_ENV).invoke(main, ["config", "check"])
    assert res.exit_code == 0, res.output


def test_source_names_the_redis_and_says_when_it_is_only_the_default() -> None:
    from stationflow.commands.common import source, source_line
    from stationflow.settings import Settings

    default = Settings.load(env={})
    assert source(default)["redis_is_default"] is True
    assert "(built-in default: set STATIONFLOW_REDIS_URL or --config)" in source_line(default)
    named = Settings.load(env={"STATIONFLOW_REDIS_URL": "redis://u:pw@h:7/1", "STATIONFLOW_GROUP_ID": "g9"})
    assert source(named) == {"redis": "redis://u:***@h:7/1", "redis_is_default": False, "prefix": "sf",
                             "kafka": "127.0.0.1:9092", "group": "g9"}
    assert source_line(named) == "redis redis://u:***@h:7/1 (prefix sf) · kafka 127.0.0.1:9092, consumer group g9"
