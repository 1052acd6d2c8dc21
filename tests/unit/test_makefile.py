"""`make test` runs the suite in four pytest-xdist workers, longest tests first; `PYTEST_WORKERS=0`
runs it in one process (tests/README.md). Checked on `make -n` (prints the commands, runs none)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _pytest_line(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("no make on PATH")
    # a `make test` running this suite passes its variables down through MAKEFLAGS: drop them
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTEST_ARGS", "PYTEST_WORKERS")}
    out = subprocess.run(["make", "-n", "test", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    lines = [ln for ln in out.splitlines() if "/pytest " in ln]
    assert len(lines) == 1, out
    return lines[0]


def test_make_test_runs_four_workers_in_collection_order() -> None:
    line = _pytest_line()
    assert "-n 4 --dist loadscope --no-loadscope-reorder" in line
    assert "--durations=15" in line


def test_pytest_workers_zero_runs_one_process() -> None:
    line = _pytest_line("PYTEST_WORKERS=0")
    assert " -n " not in line and "--dist" not in line
    assert _pytest_line("PYTEST_WORKERS=2").count("-n 2 ") == 1


def test_heavy_tests_are_collected_first_longest_first() -> None:
    # by path: under pytest-xdist the name `conftest` may be another folder's conftest
    spec = importlib.util.spec_from_file_location("suite_conftest", ROOT / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)

    class Item:
        path = Path(conftest.TESTS) / "test_x.py"

        def __init__(self, seconds: float | None) -> None:
            self.seconds = seconds

        def get_closest_marker(self, name: str) -> object:
            assert name == "heavy"
            return None if self.seconds is None else pytest.mark.heavy(self.seconds).mark

    items = [Item(None), Item(30), Item(None), Item(120), Item(9)]
    conftest.pytest_collection_modifyitems(None, items)  # type: ignore[arg-type]
    assert [i.seconds for i in items] == [120, 30, 9, None, None]
