"""Hooks run in the worker process: after every stored result and every uploaded batch.

The upload itself is done by stationflow (one envelope per batch, station ids set); hooks
are for side channels such as metrics or an audit log, and must not raise or block long.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("examples.station_app")


def log_result(station_id: str, module_input: dict[str, Any], result: dict[str, Any]) -> None:
    log.info("station %s: %s result stored", station_id, module_input.get("module", "?"))


def log_batch(batch_id: str, results: list[dict[str, Any]]) -> None:
    log.info("batch %s uploaded with %d station result(s)", batch_id, len(results))
