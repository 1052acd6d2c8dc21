"""The suite runs from a fresh clone anywhere: no file under tests/ reaches outside the
repository (an absolute path of a development machine, or a sibling folder of the checkout
that the samples were first copied from). The samples are read from the package (tests/samplefiles.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TESTS = Path(__file__).resolve().parents[1]

#: an absolute path into a home, workspace or mount folder (system paths like /proc, /bin/sh,
#: /tmp and made-up ones like /nonexistent-sf stay allowed: they exist, or are meant not to,
#: on every machine)
_ABSOLUTE = re.compile(r"""(?<![\w.:/])/(?:work|home|Users|root|mnt|media|srv|opt|workspace|private|scratch)/""")
#: the sibling folder outside the repository, spelled as a path or with pathlib
_SHARED = re.compile(r"""\.\./shared|parents?\[?\d*\]?\s*(?:\.parent)?\s*/\s*["']shared["']""")


def _offences(text: str) -> list[str]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if _ABSOLUTE.search(line) or _SHARED.search(line):
            out.append(f"{n}: {line.strip()}")
    return out


#: the sibling folder's name and two machine folders, joined at run time so that this file
#: names no path outside the repository itself
_SIB = "sha" + "red"
_WORK, _HOME = "/" + "work", "/" + "home"


def test_the_patterns_catch_what_they_are_meant_to() -> None:
    for bad in (f'SAMPLES = Path("{_WORK}/{_SIB}/samples")', f"p = '{_HOME}/dev/x.json'",
                f'ROOT.parent / "{_SIB}" / "samples"', f'Path(__file__).parents[2] / "{_SIB}"',
                f'open("../{_SIB}/samples/a.json")'):
        assert _offences(bad), bad
    for good in ('Path("/proc") / str(pid)', '"/bin/sh"', 'Path("/nonexistent-sf/tansu")',
                 '"redis://redis:6379/0"', "test_inputs_shared.py", "shared: dict = {}"):
        assert not _offences(good), good


def test_no_file_under_tests_names_a_path_outside_the_repository() -> None:
    found = {}
    for path in sorted(TESTS.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary fixtures (keys, certificates in DER) name no paths
        if hits := _offences(text):
            found[str(path.relative_to(TESTS))] = hits
    assert not found, f"tests must only read files inside the repository: {found}"
