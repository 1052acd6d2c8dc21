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
    # the dead-letter buckets (stream, seen-index, counters) and the running buckets: 4 x 48
    # keys, 64 on each master (equal slot ranges, one bucket tag per range)
    assert rep["balance"]["index_bucket_keys_per_master"] == [64, 64, 64]
    assert rep["capacity"]["stations_per_master_at_70pct"] > 0 and rep["capacity"]["stations_per_single_redis_at_70pct"] > 0
    md = (tmp_path / "cluster.md").read_text()
    assert "One Redis vs Redis Cluster (3 masters)" in md and "busiest / mean" in md


def test_real_station_jobs_with_the_state_on_a_cluster(capsys):
    """`python -m bench.jobs_bench --real --redis-cluster 3`: the per-worker capacity on a
    cluster deployment (state on the cluster, the queue on a plain Redis); every batch of
    the run completes (the bench checks) and the report names the cluster."""
    from bench import jobs_bench

    jobs_bench.main(["--real", "--stations", "8", "--repeat", "1", "--sim-s", "20", "--redis-cluster", "3"])
    out = capsys.readouterr().out
    assert "state on a 3-master Redis Cluster" in out and "8 traffic stations" in out
    rate = float(out.split("jobs/s median")[0].split()[-1])
    assert rate > 0
