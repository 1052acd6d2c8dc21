"""Scenario 7: security.

- Station jobs in Redis are JSON, never pickles, and a pickle planted by hand as a job is
  refused: the worker never unpickles it (its payload would create a marker file).
- Redis with `requirepass` and an ACL user works end to end (ingest, then a worker); a wrong
  password stops the processes with a clear message naming the URL but not the password.
- No secret (Redis password, password in the URL, SASL and key passwords) ever appears in
  the logs of the processes or in `stationflow config check`.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from harness import (
    ROOT,
    STATIONFLOW,
    Sender,
    config_dict,
    figures,
    in_offset_order,
    ingester,
    scaled,
    wait_caught_up,
    window_differences,
    worker,
    write_config,
)
from kafkautil import create_topics, unique_catalogue
from model import Model

from stationflow.local import start_redis
from stationflow.settings import Settings
from stationflow.traffic import Traffic
from store.windows import WindowStore

pytestmark = [pytest.mark.faults, pytest.mark.heavy(9)]

ADMIN_PW = "adm1n-Secret-Pw-7731"
USER, USER_PW = "sf-app", "us3r-Secret-Pw-4410"
WRONG_PW = "wr0ng-Secret-Pw-0099"
URL_PW = "url-Secret-Pw-5521"
SASL_PW = "sasl-Secret-Pw-8812"
SECRETS = (ADMIN_PW, USER_PW, WRONG_PW, URL_PW, SASL_PW)


class Planted:
    """Unpickling this runs `touch <marker>`: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


@pytest.fixture
def acl_redis(tmp_path: Path) -> Any:
    server = start_redis(password=ADMIN_PW)
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", USER, "on", f">{USER_PW}", "~*", "&*", "+@all")
    try:
        yield server
    finally:
        admin.close()
        server.close()


def run_cli(args: list[str], cfg: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, STATIONFLOW_CONFIG=str(cfg), **env)
    for k in ("STATIONFLOW_REDIS_URL", "STATIONFLOW_PREFIX"):
        if k not in env:
            full.pop(k, None)
    return subprocess.run([STATIONFLOW, *args], env=full, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_security(kafka_bootstrap: str, acl_redis: Any, tmp_path: Path) -> None:
    cat = unique_catalogue()
    create_topics(kafka_bootstrap, [t.topic for t in cat.topics], partitions=2)
    base_url = f"redis://{acl_redis.host}:{acl_redis.port}/0"
    d = config_dict(cat, base_url, kafka_bootstrap, prefix="sec", group="g-sec",
                    extra={"redis": {"username": USER}})
    cfg = write_config(tmp_path / "sec.toml", d)
    good_env = {"STATIONFLOW_REDIS_PASSWORD": USER_PW}
    settings = Settings.from_dict(d)

    # --- an ACL user with the right password: ingest, then jobs run
    n = scaled(2000, 300)
    sender = Sender(kafka_bootstrap, cat)
    for m in Traffic(stations=10, seed=7, start_ms=int(time.time() * 1000), catalogue=cat).take(n):
        sender.send(m.topic, m.value, m.timestamp_ms)
    produced = sender.results()
    sender.close()
    ing = ingester(tmp_path, cfg, "sec-ingest", "--until-idle", "3", env=good_env).start()
    assert ing.wait(180) == 0, ing.log()
    wait_caught_up(kafka_bootstrap, "g-sec", produced, 30, procs=[ing])
    r = acl_redis.client()  # the admin (default user)
    model = Model(settings.catalogue).add_all(in_offset_order(produced))
    problems, differing = window_differences(WindowStore(r, settings.catalogue, "sec"), model)
    assert problems == [], problems

    # --- jobs are JSON, not pickles
    job_keys = [k for k in r.scan_iter("rq:job:*") if r.type(k) == b"hash"]
    payloads = [r.hget(k, "data") for k in job_keys]
    payloads = [p for p in payloads if p]
    assert payloads, "no queued job to inspect"
    for p in payloads:
        raw = zlib.decompress(p)
        assert not raw.startswith(b"\x80"), "a job payload is a pickle"
        json.loads(raw)

    # --- a pickle planted as a job is refused, never unpickled
    marker = tmp_path / "unpickled"
    evil = zlib.compress(pickle.dumps(("workers.jobs.run_station", Planted(marker), ["S"], {})))
    r.hset("rq:job:planted-pickle", mapping={"data": evil, "status": "queued", "origin": "stationflow",
                                              "created_at": "2026-01-01T00:00:00.000000Z",
                                              "description": "planted", "timeout": "60"})
    r.lpush("rq:queue:stationflow", "planted-pickle")  # first in line
    wrk = worker(tmp_path, cfg, "sec-worker", "--burst", env=good_env).start()
    code = wrk.wait(300)
    assert not marker.exists(), "the worker unpickled a planted job payload"
    status = r.hget("rq:job:planted-pickle", "status")
    assert status != b"finished", status
    finished_batches = sum(1 for k in r.scan_iter("sec:batch:*") if r.hget(k, "state") in (b"uploaded", b"skipped"))
    assert code == 0, wrk.log()
    assert finished_batches > 0, "the worker ran no legitimate job after refusing the planted one"

    # --- a wrong password stops each process with a clear message and no secret
    bad_env = {"STATIONFLOW_REDIS_PASSWORD": WRONG_PW}
    bad_ing = run_cli(["ingest", "--until-idle", "1"], cfg, bad_env)
    bad_wrk = run_cli(["worker", "--burst"], cfg, bad_env)
    for res in (bad_ing, bad_wrk):
        out = res.stdout + res.stderr
        assert res.returncode != 0, out[-2000:]
        assert "authentication failed" in out.lower() or "wrongpass" in out.lower(), out[-2000:]
        assert f"{acl_redis.host}:{acl_redis.port}" in out, out[-2000:]
        assert leaked(out) == [], out[-2000:]

    # --- config check never shows a secret, whatever carries it
    secret_env = {"STATIONFLOW_REDIS_URL": f"redis://{USER}:{URL_PW}@{acl_redis.host}:{acl_redis.port}/0",
                  "STATIONFLOW_REDIS_PASSWORD": USER_PW, "STATIONFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                  "STATIONFLOW_KAFKA_SASL_MECHANISM": "PLAIN", "STATIONFLOW_KAFKA_SASL_USERNAME": "sf",
                  "STATIONFLOW_KAFKA_SASL_PASSWORD": SASL_PW}
    checks = [run_cli(["config", "check"], cfg, secret_env), run_cli(["config", "check", "--full"], cfg, secret_env)]
    for res in checks:
        assert res.returncode == 0, res.stderr[-2000:]
        assert "***" in res.stdout
        assert leaked(res.stdout + res.stderr) == [], leaked(res.stdout + res.stderr)
    logs = ing.log(10**8) + wrk.log(10**8)
    figures("security", messages=n, kills=0, losses=0, duplicates=0, dead_letters=len(model.dead),
            job_payloads_checked=len(payloads), planted_pickle_status=(status or b"").decode(),
            worker_exit=code, wrong_password_exit_codes=[bad_ing.returncode, bad_wrk.returncode],
            secrets_leaked=len(leaked(logs)), windows_differing=differing, batches_finished=finished_batches)
    assert leaked(logs) == []
    # control: the planted payload is live, so its absence of effect above means it was refused
    pickle.loads(zlib.decompress(evil))  # noqa: S301 - our own payload, to prove it works
    assert marker.exists()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q", "-s"]))
