"""The one copy of the sample messages: the package's `stationflow/samples/`.

Tests read the samples through `importlib.resources`, the way `stationflow.testing` and an
installed package do, so a fresh clone (or an installed wheel) is all a run needs.
`SAMPLES` is a real directory because some tests hand file paths to the CLI.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: good sample values, one `<default topic>.json` per topic
SAMPLES = Path(str(resources.files("stationflow").joinpath("samples")))
#: malformed values and their README (expected dead-letter reasons)
BAD_SAMPLES = SAMPLES / "bad"

if not (SAMPLES / "SCHEDULE-STATION-PARAM.json").is_file():  # pragma: no cover - broken install
    raise RuntimeError(f"the packaged samples are missing from {SAMPLES}; reinstall stationflow (pip install -e .)")
