"""The App of the example package: registrations only, no side effects at import.

Workers import this module (through the registered dotted paths' package), so it must stay
importable without starting anything; `python -m examples.station_app` runs it.
"""

from __future__ import annotations

import stationflow
from examples.station_app import algorithms, hooks

# None: the TOML named by $STATIONFLOW_CONFIG (if any), then the STATIONFLOW_* variables
app = stationflow.App()

app.register("load_prediction", algorithms.forecast_load)
app.register("electricity_price", algorithms.price_signal, run_timeout_s=10)
app.on_result(hooks.log_result)
app.on_batch(hooks.log_batch)
