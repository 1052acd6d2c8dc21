"""`stationflow ingest` argument handling that needs no server: bad selections exit 2."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ingest.service import IngestConfigError, select_modules, select_topics
from parsers.catalogue import Catalogue, default_catalogue
from stationflow.cli import main


@pytest.mark.parametrize("args, message", [
    (["--topics", "SCHEDULE-DEVICE-METRE"], "did you mean 'SCHEDULE-DEVICE-METER'"),
    (["--modules", "soh_model"], "unknown module"),
    (["--topics", "MODULE-OUTPUT-LOAD_PREDICTION"], "not consumed"),
])
def test_bad_selection_is_a_config_error(args: list[str], message: str) -> None:
    res = CliRunner().invoke(main, ["ingest", *args], env={"STATIONFLOW_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert res.exit_code == 2
    assert "config error" in res.output and message in res.output


def test_single_topic_and_aliases_select_the_same_spec() -> None:
    cat = default_catalogue()
    assert [s.topic for s in select_topics(cat, ["device_meter", "SCHEDULE-DEVICE-METER"])] == ["SCHEDULE-DEVICE-METER"]
    assert len(select_topics(cat, None)) == 13
    ext = Catalogue.build(module_overrides={"load_prediction": {"runs": "external"}})
    assert "MODULE-OUTPUT-LOAD_PREDICTION" in [s.topic for s in select_topics(ext, None)]


def test_module_selection_only_local_modules() -> None:
    cat = Catalogue.build(module_overrides={"load_prediction": {"runs": "external"}})
    assert select_modules(cat, ["SOH_model"]) == {"SOH_model"}
    assert select_modules(cat, None) is None
    with pytest.raises(IngestConfigError, match="external"):
        select_modules(cat, ["load_prediction"])


def test_exported_metrics_follow_counters_and_drop_released_partitions():
    from types import SimpleNamespace

    from ingest.offsets import TP
    from ingest.stats import IngestStats
    from stationflow import metrics as m
    from stationflow.runtime import export_ingest_metrics as export_metrics

    stats, ing = IngestStats(), SimpleNamespace(on_lag=None, on_released=None)
    export_metrics(stats, ing)
    dead_before = m.DEAD_LETTERS.value(topic="T-exp", reason="bad_json")
    commits_before = m.COMMIT_SECONDS.count()
    stats.add("topic:T-exp", "dead:bad_json", 2)
    stats.sample("commit", 0.004)
    ing.on_lag({TP("T-exp", 0): 5, TP("T-exp", 1): 7})
    text = m.REGISTRY.render()
    assert 'stationflow_consumer_lag{topic="T-exp",partition="0"} 5' in text
    assert m.DEAD_LETTERS.value(topic="T-exp", reason="bad_json") == dead_before + 2
    assert m.COMMIT_SECONDS.count() == commits_before + 1
    ing.on_released([TP("T-exp", 0)])
    text = m.REGISTRY.render()
    assert 'stationflow_consumer_lag{topic="T-exp",partition="0"}' not in text
    assert 'stationflow_consumer_lag{topic="T-exp",partition="1"} 7' in text


def test_export_metrics_writes_window_outcomes_the_paused_gauge_and_the_queue_depth() -> None:
    from types import SimpleNamespace

    import redis

    from ingest.stats import IngestStats
    from stationflow import metrics as m
    from stationflow.runtime import export_ingest_metrics as export_metrics

    depth = [3]

    def read_depth() -> int:
        if depth[0] < 0:
            raise redis.ConnectionError("redis down")
        return depth[0]

    stats = IngestStats()
    export_metrics(stats, SimpleNamespace(on_lag=None, on_released=None), "q-exp", read_depth, ["T-stamp"])
    assert m.PAUSED.value() == 0 and m.STAMPED.value(topic="T-stamp") == 0
    assert m.STORE_ERRORS.value(operation="kafka") >= 0 and "operation=\"kafka\"" in m.REGISTRY.render()
    before = {f: f.value() for f in (m.REPLAYS_SKIPPED, m.HOURS_IGNORED, m.LATE_ORDERS, m.SECONDS_EVICTED)}
    for name in ("replays_skipped", "hours_ignored", "late_orders", "seconds_evicted"):
        stats.add("ingest", name, 2)
    assert all(f.value() == v + 2 for f, v in before.items())
    stats.add("ingest", "pauses")
    assert m.PAUSED.value() == 1
    assert 'stationflow_queue_depth{queue="q-exp"} 3' in m.REGISTRY.render()
    stats.add("ingest", "resumes")
    assert m.PAUSED.value() == 0
    depth[0] = -1  # Redis unreachable at scrape time: the series goes rather than going stale
    assert 'queue="q-exp"' not in m.REGISTRY.render()
