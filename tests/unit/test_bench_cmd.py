"""`stationflow bench` picks the profile its flags name (the sections themselves run in
tests/integration/test_bench_quick.py, at the smoke profile)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bench import report
from stationflow.cli import main

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("flags", "profile"), [([], "full"), (["--quick"], "quick"), (["--smoke"], "smoke")])
def test_flags_choose_the_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: list[str],
                                  profile: str) -> None:
    seen: list[Any] = []

    def fake_run(quick: bool | str, out: Path, sections: tuple[str, ...], log: Any = None) -> dict[str, Any]:
        seen.append((quick, out, sections))
        return {"headline": ["measured"]}

    monkeypatch.setattr(report, "run", fake_run)
    res = CliRunner().invoke(main, ["bench", *flags, "--out", str(tmp_path), "--only", "jobs"])
    assert res.exit_code == 0, res.output
    [(quick, out, sections)] = seen
    chosen = report.PROFILES[quick] if isinstance(quick, str) else report.QUICK if quick else report.FULL
    assert chosen.name == profile and out == tmp_path and sections == ("jobs",)
    assert "measured" in res.output
