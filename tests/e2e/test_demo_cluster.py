"""`stationflow demo --redis-cluster 3`: the whole system on a private Redis Cluster (state)
and a plain Redis (queues), drained, every module uploaded, every process stopped."""

from __future__ import annotations

import json
import subprocess

import pytest
from e2e.test_demo import ROOT, _cmd, _env, _no_process_left, _servers_available  # noqa: F401  (autouse skip)

pytestmark = [pytest.mark.heavy(35)]


def test_demo_on_a_redis_cluster_drains_and_uploads_every_module(tmp_path):
    out = tmp_path / "summary.json"
    proc = subprocess.run(_cmd("--redis-cluster", "3", "--stations", "10", "--duration", "10",
                               "--json-summary", str(out), "--log-dir", str(tmp_path / "logs")),
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180)
    assert out.exists(), proc.stdout + proc.stderr
    s = json.loads(out.read_text())
    assert s["errors"] == [], proc.stdout[-3000:]
    assert proc.returncode == 0 and s["ok"] is True and s["drained"] is True
    assert "Redis Cluster of 3 masters" in proc.stdout
    assert s["messages_ingested"] == s["produced"]["messages"] > 0
    assert s["dead_letters"] == s["produced"]["bad"]
    for name, row in s["modules"].items():
        assert row["ok"] > 0 and row["uploaded"] > 0, (name, row)
    names = {p["name"] for p in s["processes"]}
    assert "queue-redis" in names and sum(n.startswith("redis-node-") for n in names) == 3
    _no_process_left(s)


def test_redis_url_and_redis_cluster_exclude_each_other():
    proc = subprocess.run(_cmd("--redis-cluster", "3", "--redis-url", "redis://127.0.0.1:1/0"),
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "exclude each other" in proc.stderr
