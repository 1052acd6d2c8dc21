"""docs/migration.md quotes examples/migration whole: the page and the runnable example say
the same thing, so neither can drift from the other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _quoted(doc: str, path: str) -> str:
    """The ```python block of `doc` whose first line is the comment `# <path>...`, without it."""
    for body in re.findall(r"```python\n(.*?)```", doc, re.S):
        first, _, rest = body.partition("\n")
        if first.startswith(f"# {path}"):
            return rest
    raise AssertionError(f"docs/migration.md quotes no {path}")


@pytest.mark.parametrize("path", ["examples/migration/legacy.py", "examples/migration/app.py"])
def test_migration_page_quotes_the_example_files_whole(path: str) -> None:
    doc = (ROOT / "docs" / "migration.md").read_text()
    assert _quoted(doc, path) == (ROOT / path).read_text()


def test_examples_readme_names_every_example_package() -> None:
    text = (ROOT / "examples" / "README.md").read_text()
    packages = sorted(p.name for p in (ROOT / "examples").iterdir() if (p / "__main__.py").exists())
    assert packages == ["migration", "station_app"]
    for name in packages:
        assert f"examples/{name}/" in text and f"python -m examples.{name}" in text
