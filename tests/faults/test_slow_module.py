"""Scenario 9: one slow module. SOH_model's algorithm sleeps past the batch timeout on every
call; every other module's batch is still complete and uploaded (or skipped) by its deadline,
because a station job writes and reports each module as it ends and runs independent modules
side by side. Only SOH_model's batches and those of its dependent (electricity_price, which
needs SOH_model's result of the same job) may time out.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from harness import (
    Sender,
    audit_batches,
    figures,
    ingester,
    now_ms,
    scaled,
    scenario,
    wait_batches_finished,
    wait_caught_up,
    worker,
)
from operations import incomplete, start_paced
from slow_algorithms import env as slow_env
from slow_algorithms import modules_config

from stationflow.traffic import Traffic

pytestmark = [pytest.mark.faults, pytest.mark.heavy(30)]

SLOW_MODULE, ITS_DEPENDENTS = "SOH_model", ("electricity_price",)
SLOW_S = 7.0  # batch_timeout_s is 5 s
STATIONS, PROCESSES = 3, 4  # a free worker process while every station's SOH_model sleeps


def test_a_slow_module_never_costs_its_siblings_their_uploads(kafka_bootstrap: str, private_redis: Any,
                                                             tmp_path: Path) -> None:
    sc = scenario(kafka_bootstrap, private_redis.url, tmp_path, prefix="sm", group="g-slowmod",
                  extra={"modules": modules_config()})
    cat, cfg = sc.cat, sc.cfg
    n_messages = scaled(3_000, 800)
    delay = tmp_path / "delay_s"
    delay.write_text(str(SLOW_S))
    env = slow_env(delay, slow_modules=(SLOW_MODULE,))
    messages = Traffic(stations=STATIONS, seed=9, start_ms=now_ms(), catalogue=cat).take(n_messages)

    ing = ingester(tmp_path, cfg, "sm-ingest").start()
    wrk = worker(tmp_path, cfg, "sm-worker", "--processes", str(PROCESSES), env=env).start()
    sender = Sender(kafka_bootstrap, cat)
    feeder, produced = start_paced(sender, messages, 20.0)
    r = private_redis.client()
    try:
        feeder.join(300)
        assert len(produced) == n_messages
        wait_caught_up(kafka_bootstrap, "g-slowmod", produced, 300, procs=[ing])
        time.sleep(SLOW_S)  # the last slow runs end
        batches = wait_batches_finished(r, "sm", 240)
        audit = audit_batches(r, "sm", kafka_bootstrap, cat, batches)
        assert ing.alive() and wrk.alive(), ing.log() + wrk.log()
    finally:
        ing.stop(15)
        wrk.stop(15)
        sender.close()

    slow = {SLOW_MODULE, *ITS_DEPENDENTS}
    others = {b: h for b, h in batches.items() if h.get("module") not in slow}
    late = incomplete(others)
    slow_timed_out = sum(int(h.get("timed_out", 0) or 0) for b, h in batches.items()
                         if h.get("module") == SLOW_MODULE)
    by_module: dict[str, int] = {}
    for h in others.values():
        by_module[h["module"]] = by_module.get(h["module"], 0) + 1
    figures("slow_module", messages=n_messages, slow_module=SLOW_MODULE, slow_s=SLOW_S, stations=STATIONS,
            worker_processes=PROCESSES, other_batches=len(others), other_batches_by_module=by_module,
            other_batches_late=len(late), slow_module_stations_timed_out=slow_timed_out, losses=len(late),
            duplicates=audit.duplicates, dead_letters=0, **audit.as_figures())
    assert slow_timed_out > 0, "the slow module never missed a deadline: the scenario tested nothing"
    assert len(others) > 0 and len(by_module) >= 3
    assert late == [], f"{len(late)} batches of other modules missed their deadline: {late[:5]}"
    assert audit.unfinished == [] and audit.missing == [] and audit.duplicates == 0
