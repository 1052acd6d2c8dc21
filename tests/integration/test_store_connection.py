"""store.connection against real servers: password, ACL user, unix socket, Sentinel, outages."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import redis

from stationflow.local import find_redis_server, free_port, start_redis, wait_for
from store.connection import StoreAuthError, StoreUnavailable, connect, redact


@pytest.fixture(scope="module")
def secured():
    server = start_redis(password="s3cret", extra_args=["--user", "alice", "on", ">wonder", "~*", "&*", "+@all"])
    try:
        yield server
    finally:
        server.close()


def test_password_in_url_and_override(secured):
    r = connect(f"redis://:s3cret@127.0.0.1:{secured.port}/0")
    assert r.set("k", "v") and r.get("k") == b"v"
    r2 = connect(f"redis://127.0.0.1:{secured.port}/0", password="s3cret", decode_responses=True)
    assert r2.get("k") == "v"


def test_wrong_password_says_authentication_failed_without_the_password(secured):
    url = f"redis://:nope-nope@127.0.0.1:{secured.port}/0"
    with pytest.raises(StoreAuthError) as e:
        connect(url)
    msg = str(e.value)
    assert "authentication failed" in msg and f"127.0.0.1:{secured.port}" in msg
    assert "nope-nope" not in msg
    with pytest.raises(StoreAuthError):
        connect(f"redis://127.0.0.1:{secured.port}/0")  # no password at all


def test_acl_user(secured):
    r = connect(f"redis://alice:wonder@127.0.0.1:{secured.port}/0")
    assert r.acl_whoami() in ("alice", b"alice")
    r2 = connect(f"redis://127.0.0.1:{secured.port}/0", username="alice", password="wonder")
    assert r2.acl_whoami() in ("alice", b"alice")
    with pytest.raises(StoreAuthError, match="authentication failed"):
        connect(f"redis://alice:wrong@127.0.0.1:{secured.port}/0")


def test_unreachable_server_is_store_unavailable():
    port = free_port()
    with pytest.raises(StoreUnavailable) as e:
        connect(f"redis://127.0.0.1:{port}/0", retries=2, connect_timeout=0.5)
    assert not isinstance(e.value, StoreAuthError)
    assert f"127.0.0.1:{port}" in str(e.value)


def test_unix_socket():
    d = tempfile.mkdtemp(prefix="sf-sock-")
    sock = str(Path(d) / "redis.sock")
    server = start_redis(extra_args=["--unixsocket", sock, "--unixsocketperm", "700"])
    try:
        r = connect(f"unix://{sock}?db=2")
        r.set("x", "1")
        assert r.connection_pool.connection_kwargs["db"] == 2
        assert server.client(db=2).get("x") == b"1"
    finally:
        server.close()
        shutil.rmtree(d, ignore_errors=True)


def test_unknown_scheme_and_redaction():
    with pytest.raises(ValueError, match="unsupported Redis URL scheme"):
        connect("http://:pw@127.0.0.1:1/0")
    assert redact("rediss://bob:pw@h:6380/1") == "rediss://bob:***@h:6380/1"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"


def test_retry_uses_exponential_backoff(secured):
    r = connect(f"redis://:s3cret@127.0.0.1:{secured.port}/0", retries=4)
    retry = r.connection_pool.connection_kwargs["retry"]
    assert retry._retries == 4
    assert type(retry._backoff).__name__ == "ExponentialBackoff"


def test_sentinel_url_finds_the_master():
    master = start_redis()
    d = Path(tempfile.mkdtemp(prefix="sf-sentinel-"))
    port = free_port()
    conf = d / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {d}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n")
    proc = subprocess.Popen([find_redis_server(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def ready():
            try:
                return redis.Redis(port=port, socket_timeout=0.5).sentinel_master("mymaster")
            except redis.RedisError:
                return None

        wait_for(ready, 15, "sentinel")
        r = connect(f"redis+sentinel://127.0.0.1:{port}/mymaster/3")
        r.set("via", "sentinel")
        assert master.client(db=3).get("via") == b"sentinel"
        r2 = connect("ignored", sentinels=[("127.0.0.1", port)], sentinel_service="mymaster")
        assert r2.get("missing") is None
        with pytest.raises(ValueError, match="service name"):
            connect(f"redis+sentinel://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(10)
        master.close()
        shutil.rmtree(d, ignore_errors=True)
