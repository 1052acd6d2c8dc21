"""The README's 5-minute tour and examples/README.md, run top to bottom as written against
`stationflow demo --keep`, and the README's plain `rq worker` line against a private Redis.

The commands are read from the Markdown itself (```sh blocks), so the documents cannot drift
from what works: STATION and ID are the only placeholders, filled with a station and a dead
letter of the running demo."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stationflow.local import LocalServerError, find_redis_server, find_tansu

pytestmark = [pytest.mark.heavy(65)]


ROOT = Path(__file__).resolve().parents[2]
BIN = str(Path(sys.executable).parent)  # stationflow, rq and python of this environment


@pytest.fixture(autouse=True)
def _servers_available():
    try:
        find_redis_server()
        find_tansu()
    except LocalServerError as e:
        pytest.skip(str(e))


def sh_blocks(path: Path, start: str | None = None, end: str | None = None) -> list[list[str]]:
    """The command lines of every ```sh block of `path` between the headings `start` and
    `end`, comments removed."""
    text = path.read_text()
    if start is not None:
        text = text[text.index(start):]
    if end is not None:
        text = text[:text.index(end)]
    blocks = []
    for body in re.findall(r"```sh\n(.*?)```", text, re.S):
        lines = [re.split(r"\s{2,}#", line)[0].strip() for line in body.splitlines()]
        blocks.append([line for line in lines if line and not line.startswith("#")])
    return blocks


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATIONFLOW_")}
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    return env


def _sh(cmd: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], cwd=ROOT, env=env, capture_output=True, text=True, errors="replace",
                          timeout=timeout)


def _exports(line: str, env: dict[str, str]) -> None:
    for word in shlex.split(line)[1:]:
        k, _, v = word.partition("=")
        env[k] = v


@pytest.fixture
def kept_demo(tmp_path):
    """`stationflow demo --keep` as examples/README.md starts it, with a JSON summary to read
    the export lines from; stopped with Ctrl-C afterwards (exit 0, nothing left running)."""
    first = sh_blocks(ROOT / "examples" / "README.md")[0]
    assert len(first) == 1 and first[0].startswith("stationflow demo --keep")
    tour = [c for b in sh_blocks(ROOT / "README.md", "## 5-minute tour", "## What it does") for c in b]
    assert "stationflow demo --keep" in tour  # the README's line is the one run here, with smaller traffic
    summary = tmp_path / "summary.json"
    scratch = tmp_path / "tmp"  # where the demo makes its scratch folder
    scratch.mkdir()
    argv = shlex.split(first[0]) + ["--bad-rate", "0.02", "--json-summary", str(summary)]
    proc = subprocess.Popen(argv, cwd=ROOT, env={**_base_env(), "TMPDIR": str(scratch)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while not summary.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert summary.exists(), proc.communicate(timeout=30)[0] if proc.poll() is not None else "no summary"
        time.sleep(0.2)  # written in one call; let it land
        s = json.loads(summary.read_text())
        assert s["ok"] is True, s["errors"]
        yield s
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, out[-2000:]
        exports = [line for line in out.splitlines() if line.startswith("export ")]
        assert [e.split("=")[0] for e in exports] == ["export STATIONFLOW_REDIS_URL", "export STATIONFLOW_KAFKA",
                                                       "export STATIONFLOW_GROUP_ID", "export STATIONFLOW_CONFIG"]
        assert "stopping everything" in out and "Traceback" not in out
        assert list(scratch.iterdir()) == []  # no --log-dir: the scratch folder went with the demo
        text = out.split("=== summary ===")[1]
        assert "Results can be fewer than ok runs" in text and "late results" in text
        samples = text.split("station ", 1)[1].split("no unexpected errors")[0]
        assert all(len(line) <= 100 for line in samples.splitlines())  # wrapped ...
        assert all(json.loads(json.dumps(v)) for v in s["samples"].values())
        for station, outs in s["samples"].items():  # ... and whole: every figure is in the text
            flat = " ".join(samples.split())
            assert all(json.dumps(fig, ensure_ascii=False) in flat for fig in outs.values()), station
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_readme_tour_and_examples_against_the_kept_demo(kept_demo):
    s = kept_demo
    env = _base_env()
    for k, v in s["env"].items():
        env[k] = v
    station = next(iter(s["samples"]))
    listed = _sh("stationflow dlq list --json --count 1", env)
    dead_id = json.loads(listed.stdout.splitlines()[0])["id"]
    have_cli = shutil.which("redis-cli", path=env["PATH"]) is not None
    blocks = sh_blocks(ROOT / "README.md", "## 5-minute tour", "## What it does")
    ran = 0
    for cmd in [c for b in blocks for c in b]:
        if cmd.startswith("stationflow demo") or (cmd.startswith("redis-cli") and not have_cli):
            continue
        cmd = re.sub(r"\bID\b", dead_id, re.sub(r"\bSTATION\b", station, cmd))
        if "--watch" in cmd:  # runs until Ctrl-C: two refreshes, then stop it
            res = _sh(f"timeout -s INT 5 {cmd}", env)
            assert res.stdout.count("status at ") >= 2, res.stdout + res.stderr
        else:
            res = _sh(cmd, env)
            assert res.returncode == 0, (cmd, res.stdout, res.stderr)
        assert "Traceback" not in res.stdout + res.stderr and res.stdout.strip(), (cmd, res.stderr)
        if cmd.startswith(("stationflow status", "stationflow inspect", "stationflow dlq")):
            assert res.stdout.splitlines()[0].startswith(f"redis {s['env']['STATIONFLOW_REDIS_URL']} (prefix sf)")
            assert f"consumer group {s['env']['STATIONFLOW_GROUP_ID']}" in res.stdout.splitlines()[0]
        if cmd == f"stationflow inspect {station} car_price":
            assert "outputs (latest per module):\n  none yet" not in res.stdout and "load_prediction" in res.stdout
        ran += 1
    assert ran >= 9

    # examples/README.md: each example against the same demo, under its own prefix
    expect = {"examples.station_app": '"model": "example-v1"', "examples.migration": '"total_gun_power"'}
    checked = set()
    for block in sh_blocks(ROOT / "examples" / "README.md")[1:]:
        example_station = None
        example = None
        for cmd in block:
            if cmd.startswith("export "):
                _exports(cmd, env)
                continue
            if cmd.startswith("python -m "):
                example = cmd.split()[2]
                res = _sh(cmd.replace("python", sys.executable, 1), env, timeout=240)
                assert res.returncode == 0, (cmd, res.stdout[-2000:], res.stderr[-3000:])
                continue
            if re.search(r"\bSTATION\b", cmd) and example_station is None:  # the block names it with inspect --keys
                keys = _sh("stationflow inspect --keys --json", env)
                example_station = json.loads(keys.stdout)["station"]
            res = _sh(re.sub(r"\bSTATION\b", example_station or "", cmd), env)
            assert res.returncode == 0 and "Traceback" not in res.stderr, (cmd, res.stdout, res.stderr)
            if cmd == "stationflow inspect --keys":
                example_station = re.search(r"examples for station (\S+)", res.stdout).group(1)
            if "load_prediction" in cmd:
                assert expect[example] in res.stdout, res.stdout
                checked.add(example)
                assert f"(prefix {env['STATIONFLOW_PREFIX']})" in res.stdout.splitlines()[0]
    assert checked == set(expect)  # both examples ran and their outputs were read back


def test_readme_plain_rq_worker_line_runs_a_job(redis_client, redis_url):
    from rq import Queue
    from rq.serializers import JSONSerializer

    block = next(b for b in sh_blocks(ROOT / "README.md", "## Running processes", "## Writing algorithms")
                 if any(c.startswith("rq worker") for c in b))
    line = next(c for c in block if c.startswith("rq worker"))
    assert '--url "$STATIONFLOW_REDIS_URL"' in line
    job = Queue("stationflow", connection=redis_client, serializer=JSONSerializer).enqueue("os.getcwd")
    env = {**_base_env(), "STATIONFLOW_REDIS_URL": redis_url}
    proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while job.get_status(refresh=True) != "finished" and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert job.get_status(refresh=True) == "finished", proc.stdout.read() if proc.poll() is not None else ""
        assert job.return_value() == str(ROOT)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
