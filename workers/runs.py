"""One module run, classified as the worker reports it (spec §6.5, §6.6): the one place that
decides ok / none / failed and the failure reason, used by the station job (which runs the
algorithms of a job side by side on lanes, so it applies the steps separately) and by
`stationflow.testing.run_algorithm` (`classify_run`, all steps in one call).

A run fails `not_ready` when a required input is missing, `upstream_failed` when a missing
one is a module that failed earlier in the same job, `timeout` after `run_timeout_s`,
`exception` when the algorithm raised, `unserialisable` when its value cannot be stored;
`None` means "no output" (outcome none).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from parsers.catalogue import ModuleSpec
from parsers.readiness import missing_required
from store.tracker import Normalised, UnserialisableResult, normalise_result
from workers.algorithms import Algorithm
from workers.lanes import AlgorithmTimeout, call_with_timeout

log = logging.getLogger("workers.jobs")


@dataclass
class Run:
    """The classified outcome of one run. `returned`: the algorithm returned (whatever its
    value), so it received its inputs (the job moves its order cursors then)."""

    outcome: str  # ok | none | failed
    reason: str | None = None
    result: Normalised | None = None
    error: BaseException | None = None
    returned: bool = False
    missing: tuple[str, ...] = ()


def check_ready(spec: ModuleSpec, inp: Mapping[str, Any], failed_upstream: Collection[str] = ()) -> Run | None:
    """The failed run of a module whose required inputs are not all in `inp`, else None
    (the algorithm may be called). `failed_upstream`: modules that failed earlier in the job."""
    quality = inp.get("_data_quality") or {}
    missing = tuple(missing_required(spec, quality.get("available_topics", ())))
    if not missing:
        return None
    reason = "upstream_failed" if any(x in failed_upstream for x in missing) else "not_ready"
    return Run("failed", reason, missing=missing)


def classify_error(station: str, module: str, error: Exception) -> Run:
    """The run of an algorithm call that raised `error` (AlgorithmTimeout: it timed out)."""
    if isinstance(error, AlgorithmTimeout):
        return Run("failed", "timeout", error=error)
    log.warning("station %s module %s: algorithm raised %s: %s", station, module, type(error).__name__, error)
    return Run("failed", "exception", error=error)


def classify_value(station: str, value: Any) -> Run:
    """The run of an algorithm call that returned `value`."""
    if value is None:
        return Run("none", returned=True)
    try:
        norm = normalise_result(station, value)
    except UnserialisableResult as e:
        log.warning("%s", e)
        return Run("failed", "unserialisable", error=e, returned=True)
    return Run("ok", result=norm, returned=True)


def classify_run(fn: Algorithm, spec: ModuleSpec, station: str, inp: Mapping[str, Any], *,
                 timeout_s: float | None = None, failed_upstream: Collection[str] = ()) -> Run:
    """Run `fn(station, inp)` unless a required input is missing, and classify the outcome.
    `timeout_s` defaults to the module's `run_timeout_s`."""
    not_ready = check_ready(spec, inp, failed_upstream)
    if not_ready is not None:
        return not_ready
    try:
        value = call_with_timeout(fn, station, inp, spec.run_timeout_s if timeout_s is None else timeout_s)
    except Exception as e:  # noqa: BLE001 - an algorithm's failure is a reported outcome
        return classify_error(station, spec.name, e)
    return classify_value(station, value)
