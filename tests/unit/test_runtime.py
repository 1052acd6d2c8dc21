"""stationflow.runtime: the wiring between ingest, workers and the process's metrics."""

import pytest

from stationflow import metrics as m
from stationflow import runtime
from workers import events

pytestmark = pytest.mark.unit


def test_every_worker_event_has_a_metric_family():
    assert set(runtime._WORKER_COUNTS) == events.COUNTS
    assert set(runtime._WORKER_SAMPLES) == events.SAMPLES


def test_worker_events_reach_the_registry_once_however_often_exported():
    runtime.export_worker_metrics()
    runtime.export_worker_metrics()
    runs = m.RUNS.value(module="mod-rt", outcome="failed:timeout")
    seconds = m.ALGORITHM_SECONDS.count(module="mod-rt")
    events.count("runs", module="mod-rt", outcome="failed:timeout")
    events.sample("algorithm_seconds", 0.25, module="mod-rt")
    assert m.RUNS.value(module="mod-rt", outcome="failed:timeout") == runs + 1
    assert m.ALGORITHM_SECONDS.count(module="mod-rt") == seconds + 1


def test_a_misspelt_worker_event_fails_loudly():
    with pytest.raises(ValueError, match="unknown worker count 'run'"):
        events.count("run", module="x", outcome="ok")
    with pytest.raises(ValueError, match="unknown worker sample 'job_secs'"):
        events.sample("job_secs", 1.0)
