"""Shared fixtures: a private redis-server and Kafka-compatible broker per test session.

The machine's own Redis on 6379 is never touched; every server here runs on a free port
and is stopped at session end. Set STATIONFLOW_KAFKA=host:port to test against a real Kafka
instead of the bundled Tansu broker (topics are then only ever created, never deleted).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
for p in (str(ROOT), str(TESTS)):  # `import kafkautil` and the project packages from any cwd
    if p not in sys.path:
        sys.path.insert(0, p)

from hypothesis import HealthCheck, settings  # noqa: E402

from stationflow.local import LocalServerError, find_redis_server, start_broker, start_redis  # noqa: E402

settings.register_profile("ci", max_examples=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_MARKERS = {
    "unit": "no servers needed",
    "integration": "needs a real redis-server and a Kafka-compatible broker",
    "faults": "kill/restart/fuzz scenarios (tests/faults)",
    "slow": "long-running variants",
    "heavy": "heavy(seconds): a test that runs real processes for about that long; scheduled first, "
             "longest first, so the parallel workers of `make test` overlap the long ones",
}
_INTEGRATION_DIRS = ("integration", "e2e", "faults")


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # A CI timeout sends SIGTERM: turn it into a normal interrupt so fixtures and the atexit
    # hook of stationflow.local stop every redis-server and broker we started.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    for name, doc in _MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    # kafka-python 3.0 loads its protocol schemas with a deprecated importlib.resources API
    config.addinivalue_line("filterwarnings", "ignore:.*is deprecated. Use files\\(\\) instead:DeprecationWarning")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark by folder so `-m unit` / `-m integration` work without per-file boilerplate."""
    for item in items:
        try:
            rel = Path(str(item.path)).resolve().relative_to(TESTS)
        except ValueError:
            continue
        top = rel.parts[0] if len(rel.parts) > 1 else ""
        if top == "unit":
            item.add_marker(pytest.mark.unit)
        elif top in _INTEGRATION_DIRS:
            item.add_marker(pytest.mark.integration)
            if top == "faults":
                item.add_marker(pytest.mark.faults)
    items.sort(key=_heavy_seconds, reverse=True)  # stable: the rest keeps its order


def _heavy_seconds(item: pytest.Item) -> float:
    """The `heavy(seconds)` hint, 0 without one. Only an order: with `-n` (pytest-xdist,
    `--dist loadgroup`) the workers take tests in collection order, so the long ones start
    first and the short ones fill the gaps instead of one worker ending on a queue of long
    tests."""
    mark = item.get_closest_marker("heavy")
    return float(mark.args[0]) if mark is not None and mark.args else 0.0


# ---- Redis -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def redis_server() -> Iterator[object]:
    """The session's private RedisServer (for tests that need .port/.stop()); prefer redis_url."""
    try:
        find_redis_server()
    except LocalServerError as exc:
        pytest.skip(str(exc))
    server = start_redis()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_url(redis_server: object) -> str:
    """URL of the session's private redis-server (our own: tests may FLUSHALL it)."""
    return redis_server.url  # type: ignore[attr-defined]


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[object]:
    """redis.Redis (bytes replies) on the private server, emptied before each test."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=False)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[object]:
    """The session's private Redis Cluster: 3 masters + 3 replicas on loopback ports
    (stationflow.local_cluster; `.url` is its redis+cluster:// URL, `.nodes` its servers)."""
    from stationflow.local_cluster import start_cluster

    try:
        find_redis_server()
    except LocalServerError as exc:
        pytest.skip(str(exc))
    cluster = start_cluster(masters=3, replicas=1)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def cluster_client(redis_cluster: object) -> Iterator[object]:
    """redis.cluster.RedisCluster (bytes replies) on the session cluster, emptied first."""
    from store.connection import connect

    redis_cluster.wait_healthy()  # type: ignore[attr-defined]  # a fault test may have failed a master over
    redis_cluster.flushall()  # type: ignore[attr-defined]
    client = connect(redis_cluster.url)  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(params=["single", "cluster"])
def any_redis(request: pytest.FixtureRequest) -> Iterator[object]:
    """The same test on a single Redis and on the Redis Cluster (each emptied first)."""
    yield request.getfixturevalue("redis_client" if request.param == "single" else "cluster_client")


@pytest.fixture
def fake_redis() -> Iterator[object]:
    """An in-process fakeredis with Lua (lupa) for fast unit tests of scripts."""
    import fakeredis

    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server, decode_responses=False)
    try:
        yield client
    finally:
        client.close()


# ---- Kafka -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """"host:port" of a Kafka-compatible broker: $STATIONFLOW_KAFKA if set, else a private Tansu."""
    external = os.environ.get("STATIONFLOW_KAFKA")
    if external:
        yield external
        return
    broker = start_broker()
    try:
        yield broker.bootstrap
    finally:
        broker.close()



# ---- private servers for fault tests (stop/kill/restart without disturbing the shared ones)

@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[object]:
    """A RedisServer of this test only, persisting (AOF, fsync always) in tmp_path:
    `.stop()`/`.kill()` then `.start()` brings it back on the same port with every
    acknowledged write (everysec could lose the last second under load: tests must not flake)."""
    try:
        find_redis_server()
    except LocalServerError as exc:
        pytest.skip(str(exc))
    server = start_redis(dir=tmp_path / "redis", appendonly=True, extra_args=("--appendfsync", "always"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def private_broker() -> Iterator[object]:
    """A Tansu Broker of this test only (in-memory: `.restart()` loses every topic and message)."""
    broker = start_broker()
    try:
        yield broker
    finally:
        broker.close()
