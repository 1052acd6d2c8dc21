"""The ported callback registered for load_prediction with the flat (reference) layout.

`python -m examples.migration` runs it (examples/README.md: against `stationflow demo --keep`).
"""

from __future__ import annotations

import stationflow
from examples.migration.legacy import process_station

app = stationflow.App()  # None: $STATIONFLOW_CONFIG and STATIONFLOW_*; or a TOML path, or a dict
app.register("load_prediction", process_station, layout="flat")

if __name__ == "__main__":
    app.run(ingesters=1, workers=2)  # Ctrl-C / SIGTERM stops everything cleanly
