"""Helpers for the console tests: a Redis filled by a short real pipeline run (`stationflow
demo` against a Redis and a broker the tests keep), a console subprocess, and plain HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stationflow.local import Broker, RedisServer, start_broker, start_redis


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from stationflow.cli import main; sys.exit(main())", *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATIONFLOW_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Filled:
    redis: RedisServer
    broker: Broker
    config: Path
    summary: dict[str, Any]
    group: str
    output: str

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli_argv("--config", str(self.config), *args), capture_output=True, text=True,
                              timeout=timeout, env=clean_env())


def fill(workdir: Path, stations: int = 3, duration_s: float = 8.0) -> Filled:
    """Run the demo (ingester, workers, traffic with some bad messages) into a Redis and a
    broker that outlive it; the demo's consumer group is `stationflow-demo-<its pid>`."""
    redis = start_redis(dir=workdir / "redis")
    broker = start_broker()
    summary_path = workdir / "summary.json"
    proc = subprocess.Popen(cli_argv("demo", "--redis-url", redis.url, "--kafka", broker.bootstrap,
                                     "--stations", str(stations), "--duration", str(duration_s), "--seed", "21",
                                     "--bad-rate", "0.03", "--heartbeat", "2", "--log-dir", str(workdir / "logs"),
                                     "--json-summary", str(summary_path)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env())
    out, _ = proc.communicate(timeout=240)
    if proc.returncode != 0:
        redis.close()
        broker.close()
        raise AssertionError(f"demo failed ({proc.returncode}):\n{out[-3000:]}")
    group = f"stationflow-demo-{proc.pid}"
    config = workdir / "stationflow.toml"
    config.write_text(f'[redis]\nurl = "{redis.url}"\n[kafka]\nbootstrap_servers = "{broker.bootstrap}"\n'
                      f'group_id = "{group}"\n')
    return Filled(redis, broker, config, json.loads(summary_path.read_text()), group, out)


@contextlib.contextmanager
def console(config: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """A `stationflow console --port 0` subprocess; yields its base URL ("http://127.0.0.1:N")."""
    proc = subprocess.Popen(cli_argv("--config", str(config), "console", "--port", "0", "--refresh", "1", *args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or clean_env())
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("console on "):
            proc.kill()
            raise AssertionError(f"console did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
        url = line.split()[2].rstrip("/")
        yield url.replace("0.0.0.0", "127.0.0.1")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a: Any, **k: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def http(url: str, method: str = "GET", data: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30) -> Reply:
    """One request, redirects not followed, errors returned as replies."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with _opener.open(req, timeout=timeout) as resp:
            return Reply(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.headers, e.read())


def wait_json(url: str, ready: Any, timeout: float = 30) -> Any:
    """GET `url` until it answers 200 and `ready(json)` is true; the last JSON (None: never 200)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = http(url)
        got = reply.json() if reply.status == 200 else None
        if (got is not None and ready(got)) or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def chromium(browser: str, profile: Path, url: str, *args: str, timeout: float = 90) -> str:
    """Run headless Chromium once on `url` (a fresh profile); returns its stdout."""
    done = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout
