"""The ported callback registered for load_prediction with the flat (reference) layout."""

from __future__ import annotations

import stationflow
from examples.migration.legacy import process_station

app = stationflow.App()
app.register("load_prediction", process_station, layout="flat")
