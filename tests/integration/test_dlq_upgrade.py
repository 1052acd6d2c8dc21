"""Upgrading past the {dlq} hash tag: dead-letter keys under the old names make `status` and
`dlq` warn on stderr (one line), and the renames docs/operations.md gives (run here with the
real redis-cli, exactly as written) bring the old entries and counts back."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from stationflow.cli import main
from store.dlq import DeadLetter, DeadLetters, old_dlq_warning
from store.keys import Keys

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
OLD = ["sf:dlq", "sf:dlq:seen", "sf:counters:dlq"]


def _documented_renames() -> list[str]:
    text = DOC.read_text().split("### Dead letters under the `{dlq}` hash tag", 1)[1]
    return [line.strip() for line in text.splitlines() if re.match(r"\s*redis-cli .* RENAMENX ", line)]


@pytest.fixture
def upgraded(redis_client, redis_url, tmp_path):
    """A Redis an older version left its dead letters in, and a config of the default prefix."""
    r = redis_client
    dl = DeadLetters(r)
    assert all(dl.add([DeadLetter("T-order", 0, off, 1_700_000_000_000, "bad_json", "truncated", b"{\"a\":")
                       for off in (7, 8)]))
    for old, new in Keys().dlq_renamed():  # the names before the hash tag
        r.rename(new, old)
    assert sorted(k.decode() for k in r.keys("*dlq*")) == sorted(OLD)
    cfg = tmp_path / "stationflow.toml"
    cfg.write_text(f'[redis]\nurl = "{redis_url}"\n')
    return r, cfg, redis_url


def _cli(cfg: Path, *args: str):
    res = CliRunner().invoke(main, ["--config", str(cfg), *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def test_status_and_dlq_warn_until_the_documented_renames_ran(upgraded):
    r, cfg, url = upgraded
    warning = old_dlq_warning(r)
    assert warning and len(warning.splitlines()) == 1
    assert "sf:dlq (now sf:{dlq})" in warning and "sf:counters:dlq (now sf:counters:{dlq})" in warning

    status = _cli(cfg, "status", "--no-lag")
    assert status.stderr.strip() == warning and "warning" not in status.stdout
    as_json = _cli(cfg, "status", "--json", "--no-lag")
    assert as_json.stderr.strip() == warning and json.loads(as_json.stdout)["dlq_entries"] == 0
    listed = _cli(cfg, "dlq", "list")
    assert listed.stderr.strip() == warning and "0 entries in the stream" in listed.stdout

    renames = _documented_renames()
    assert len(renames) == 3
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli not on PATH (it comes with redis-server)")
    for line in renames:
        done = subprocess.run(["bash", "-c", line], env={**os.environ, "STATIONFLOW_REDIS_URL": url},
                              capture_output=True, text=True, timeout=30, check=True)
        assert done.stdout.strip() == "1", (line, done.stdout, done.stderr)

    assert old_dlq_warning(r) is None and not any(r.exists(k) for k in OLD)
    listed = _cli(cfg, "dlq", "list", "--json")
    assert listed.stderr == "" and [json.loads(x)["offset"] for x in listed.stdout.splitlines()] == [8, 7]
    snap = json.loads(_cli(cfg, "status", "--json", "--no-lag").stdout)
    assert snap["dlq_entries"] == 2 and snap["counters"]["dlq"] == {"T-order:bad_json": 2}
    # the seen-index came along: the same bad messages delivered again add nothing
    assert DeadLetters(r).add([DeadLetter("T-order", 0, 7, 1_700_000_000_000, "bad_json", "truncated", b"{")]) == [None]
    assert r.xlen("sf:{dlq}") == 2


def test_renamenx_keeps_what_a_new_version_already_wrote(upgraded):
    """The documented command answers 0 and moves nothing when the new name exists (an
    ingester of the new version ran before the rename): the old entries stay, and so does
    the warning."""
    r, cfg, _ = upgraded
    assert all(DeadLetters(r).add([DeadLetter("T-order", 0, 9, 1_700_000_000_000, "bad_json", "x", b"{")]))
    assert r.execute_command("RENAMENX", "sf:dlq", "sf:{dlq}") == 0
    assert r.xlen("sf:dlq") == 2 and r.xlen("sf:{dlq}") == 1
    assert "sf:dlq (now sf:{dlq})" in _cli(cfg, "dlq", "list").stderr


def test_no_warning_without_old_keys(redis_client, cluster_client):
    for r in (redis_client, cluster_client):
        DeadLetters(r).add([DeadLetter("T-order", 0, 1, 1_700_000_000_000, "bad_json", "x", b"{")])
        r.hset("sf:counters:dlq_replayed", "1-0", 1)  # replay counts keep their name
        assert old_dlq_warning(r) is None
    cluster_client.xadd("sf:dlq", {"a": "b"})  # the check runs on a cluster too (one EXISTS per slot)
    assert "sf:dlq (now sf:{dlq})" in old_dlq_warning(cluster_client)
