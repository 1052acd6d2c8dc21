"""The metrics table of docs/operations.md, parsed: what an operator is promised."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
_ROW = re.compile(r"^\| (`stationflow_[^|]+) \| ([a-z, ]+) \|\s*([^|]*?)\s*\|$", re.M)


@dataclass(frozen=True)
class Documented:
    name: str
    type: str  # counter | gauge | histogram
    labels: frozenset[str]
    values: dict[str, tuple[str, ...]]  # label -> the values the table lists for it


def documented_metrics() -> dict[str, Documented]:
    """name -> its row; `_x` shorthand names take the `stationflow` prefix."""
    out: dict[str, Documented] = {}
    for names_col, types_col, labels_col in _ROW.findall(DOC.read_text()):
        names = ["stationflow" + n if n.startswith("_") else n for n in re.findall(r"`([^`]+)`", names_col)]
        types = [t.strip() for t in types_col.split(",")]
        if len(types) == 1:
            types *= len(names)
        assert len(types) == len(names), f"docs/operations.md row {names_col!r}: {types_col!r}"
        values = {}
        for label, listed in re.findall(r"(\w+) \(([^)]*)\)", labels_col):
            values[label] = tuple(v.strip() for v in listed.split(",") if re.fullmatch(r"[a-z_]+", v.strip()))
        labels = frozenset(x.strip() for x in re.sub(r"\([^)]*\)", "", labels_col).split(",") if x.strip())
        for name, typ in zip(names, types, strict=True):
            assert name not in out, f"{name} documented twice"
            out[name] = Documented(name, typ, labels, values)
    assert out, "no metrics table found in docs/operations.md"
    return out
