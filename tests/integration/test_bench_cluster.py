"""`stationflow bench --redis-cluster N`: one Redis and a private cluster side by side."""

from __future__ import annotations

import json

from click.testing import CliRunner

from stationflow.cli import main


def test_bench_redis_cluster_smoke_reports_both_and_the_balance(tmp_path):
    res = CliRunner().invoke(main, ["bench", "--redis-cluster", "3", "--smoke", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "cluster.json").read_text())
    assert rep["masters"] == 3
    for side in ("single", "cluster"):
        assert rep[side]["messages_per_s"] > 0 and rep[side]["redis_cpu_us_per_record"] > 0
    assert len(rep["cluster"]["records_per_master"]) == 3
    assert sum(rep["cluster"]["records_per_master"]) == rep["records"]
    assert len(rep["balance"]["keys_per_master"]) == 3 and rep["balance"]["busiest_over_mean_keys"] >= 1
    assert rep["capacity"]["stations_per_master_at_70pct"] > 0 and rep["capacity"]["stations_per_single_redis_at_70pct"] > 0
    md = (tmp_path / "cluster.md").read_text()
    assert "One Redis vs Redis Cluster (3 masters)" in md and "busiest / mean" in md
