"""`stationflow bench` picks the profile its flags name (the sections themselves run in
tests/integration/test_bench_quick.py, at the smoke profile). The command runs `python -m bench`
from the checkout (nothing imports the benchmarks), whose `main` chooses the profile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bench import report
from stationflow.cli import main
from stationflow.commands import bench_cmd

pytestmark = pytest.mark.unit

FLAGS = [([], "full"), (["--quick"], "quick"), (["--smoke"], "smoke")]


@pytest.mark.parametrize(("flags", "profile"), FLAGS)
def test_flags_choose_the_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  flags: list[str], profile: str) -> None:
    seen: list[Any] = []

    def fake_run(quick: bool | str, out: Path, sections: tuple[str, ...], log: Any = None) -> dict[str, Any]:
        seen.append((quick, out, sections))
        return {"headline": ["measured"]}

    monkeypatch.setattr(report, "run", fake_run)
    with pytest.raises(SystemExit) as exit_:
        report.main([*flags, "--out", str(tmp_path), "--only", "jobs"])
    assert exit_.value.code == 0
    [(quick, out, sections)] = seen
    chosen = report.PROFILES[quick] if isinstance(quick, str) else report.QUICK if quick else report.FULL
    assert chosen.name == profile and out == tmp_path and sections == ("jobs",)
    assert "measured" in capsys.readouterr().out


@pytest.mark.parametrize(("flags", "profile"), FLAGS)
def test_the_command_runs_the_checkout_bench_with_the_same_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                 flags: list[str], profile: str) -> None:
    started: list[tuple[list[str], Any]] = []

    class Done:
        def __init__(self, argv: list[str], cwd: Any = None) -> None:
            started.append((argv, cwd))

        def wait(self) -> int:
            return 0

        def send_signal(self, signum: int) -> None:
            pass

    monkeypatch.setattr(subprocess, "Popen", Done)
    res = CliRunner().invoke(main, ["bench", *flags, "--out", str(tmp_path), "--only", "jobs"])
    assert res.exit_code == 0, res.output
    [(argv, cwd)] = started
    assert argv == [sys.executable, "-m", "bench", "--out", str(tmp_path), *flags, "--only", "jobs"]
    assert cwd == bench_cmd.CHECKOUT and (cwd / "bench" / "report.py").is_file()
