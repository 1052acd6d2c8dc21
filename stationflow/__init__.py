"""stationflow: EV-charging telemetry from Kafka into per-station windows in Redis, algorithm
modules on RQ workers, batched results back to Kafka.

The public names are loaded on first use, so `import stationflow` stays cheap and has no side
effects (no logging setup, no files, no Kafka or Redis import): the command line and every
worker import this package.

    app = stationflow.App("stationflow.toml")      # stationflow.app
    settings = stationflow.Settings.load()         # stationflow.settings
    from stationflow.testing import sample_input   # helpers for algorithm tests
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "App": "stationflow.app",
    "Registration": "stationflow.app",
    "RegistrationError": "stationflow.app",
    "Running": "stationflow.running",
    "Settings": "stationflow.settings",
    "ConfigError": "stationflow.settings",
}

__all__ = ["App", "ConfigError", "Registration", "RegistrationError", "Running", "Settings", "__version__"]

if TYPE_CHECKING:
    from stationflow.app import App, Registration, RegistrationError
    from stationflow.running import Running
    from stationflow.settings import ConfigError, Settings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stationflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
