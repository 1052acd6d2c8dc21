"""`stationflow bench --smoke` end to end (the quick profile's code at the smallest sizes): it
runs in its own process tree (private redis-server and broker), exits 0, and writes a report
with every section filled from real measurements.

No performance thresholds: only that each figure was measured (runs counted, min <= median <=
max, messages verified, envelopes seen) and that the report names what it measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.heavy(125)]


ROOT = Path(__file__).resolve().parents[2]
STATIONFLOW = Path(sys.executable).with_name("stationflow")


def _check_spread(s: dict) -> None:
    assert s["runs"] == len(s["values"]) == 3
    assert s["min"] <= s["median"] <= s["max"]
    assert s["min"] > 0


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if k != "STATIONFLOW_CONFIG"}
    proc = subprocess.run([str(STATIONFLOW), "bench", "--smoke", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text(), proc


def test_every_section_measured(quick_report: tuple[dict, str, subprocess.CompletedProcess]) -> None:
    rep, _md, _proc = quick_report
    assert rep["profile"] == "smoke"
    for section in ("machine", "ingest", "jobs", "e2e", "memory", "console"):
        assert section in rep and "error" not in rep[section], rep.get(section)

    m = rep["machine"]
    assert m["cores"] == os.cpu_count()
    assert m["python"] == ".".join(map(str, sys.version_info[:3]))
    assert m["redis_server"] and m["libraries"]["kafka-python"] and m["libraries"]["rq"]

    ing = rep["ingest"]
    assert ing["messages"] == rep["profile_settings"]["ingest_messages"]
    assert ing["station_records"] >= ing["messages"]
    for key in ("bare_consume", "one_ingester", "two_ingesters", "grouped_rpush_ltrim", "store_apply",
                "ratio_one_vs_bare", "ratio_two_vs_one", "ratio_one_vs_grouped"):
        _check_spread(ing[key])
    # a ratio is per run: its values are the quotients of the two sides' values
    for v, a, b in zip(ing["ratio_one_vs_bare"]["values"], ing["one_ingester"]["values"],
                       ing["bare_consume"]["values"], strict=True):
        assert v == pytest.approx(a / b)

    jobs = rep["jobs"]
    for key in ("bare_rq_one_worker", "station_jobs_one_worker", "bare_rq_pool_of_2", "station_jobs_pool_of_2",
                "ratio_station_vs_bare_one", "ratio_station_vs_bare_pool"):
        _check_spread(jobs[key])

    e2e = rep["e2e"]
    st = e2e["steady"]
    assert st["envelopes"] > 0 and st["sent"] > 0
    assert 0 <= st["p50_ms"] <= st["p95_ms"] <= st["p99_ms"] <= st["max_ms"]
    assert sum(t["envelopes"] for t in st["by_source_topic"].values()) == st["envelopes"]
    assert st["windows"]["p50_ms"]["runs"] >= 2
    assert e2e["steps"], "the load was stepped up at least once"
    assert [s["target_records_s"] for s in e2e["steps"]] == rep["profile_settings"]["e2e_steps"][:len(e2e["steps"])]
    assert all(x > 0 for x in e2e["rss_start"]["workers"] + e2e["rss_end"]["ingester"])
    # capacity: the default configuration and, apart, the same without rate control
    assert e2e["min_interval_s"] == "defaults" and e2e["no_rate_limit"]["min_interval_s"] == 0
    for run in (e2e, e2e["no_rate_limit"]):
        assert run["runs"]["fired"] > 0 and run["steady"]["worker_cpu_ms_per_job"] > 0
        # station group jobs: station jobs counted apart from RQ jobs, CPU cores per process
        assert run["steady"]["station_jobs_s"] >= run["steady"]["worker_jobs_s"] > 0
        assert run["steady"]["worker_cpu_ms_per_station_job"] <= run["steady"]["worker_cpu_ms_per_job"]
        assert {"machine", "workers", "ingester", "redis"} <= set(run["steady"]["cpu_cores"])
        assert run["steady"]["cpu_cores"]["workers"] > 0
        assert run["steady"]["envelopes"] > 0
    assert e2e["no_rate_limit"]["runs"]["absorbed_rate_limit"] == 0 == e2e["no_rate_limit"]["runs"]["deferred"]

    mem = rep["memory"]["windows"]
    assert mem["stations"] == rep["profile_settings"]["memory_stations"]
    assert mem["stored_items"] > 0 and mem["used_memory_growth"] > 0
    assert mem["bytes_per_stored_record"] == pytest.approx(mem["used_memory_growth"] / mem["stored_items"])
    assert mem["fleet_bytes_extrapolated"] == pytest.approx(mem["bytes_per_station"] * 10_000)
    assert rep["memory"]["processes"]["redis_used_memory_after_e2e"] > 0


def test_markdown_has_every_section_and_the_headline(quick_report: tuple[dict, str, subprocess.CompletedProcess]) -> None:
    rep, md, proc = quick_report
    for heading in ("# stationflow benchmark report (smoke)", "## Headline", "## Machine", "## 1. Ingest",
                    "## 2. Jobs", "## 3. End to end", "## 4. Memory", "## Noise"):
        assert heading in md
    assert "Failed:" not in md
    assert len(rep["headline"]) >= 8
    for line in rep["headline"]:
        assert f"- {line}" in md
        assert line in proc.stdout  # the command prints the headline too
    assert f"{rep['ingest']['one_ingester']['median']:,.0f}" in md
    assert "extrapolated" in md
    assert "| min_interval_s = 0 |" in md and "| default (catalogue min_interval_s) |" in md
