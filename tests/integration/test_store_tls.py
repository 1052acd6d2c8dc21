"""rediss:// against a real TLS redis-server: the settings' TLS keys reach redis-py, the server
certificate is verified (CA and host name), mutual TLS works, and the window store reads and
writes over it. Certificates: tests/data/tls (make.sh regenerates them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parsers.catalogue import Catalogue
from parsers.records import Record, Source
from stationflow.local import RedisServer, free_port, start_redis
from stationflow.settings import Settings
from store.connection import StoreUnavailable
from store.windows import WindowStore

pytestmark = [pytest.mark.integration]

TLS = Path(__file__).resolve().parents[1] / "data" / "tls"
CA, OTHER_CA = str(TLS / "ca.pem"), str(TLS / "other-ca.pem")
CLIENT_CERT, CLIENT_KEY = str(TLS / "client.pem"), str(TLS / "client.key")


class TLSRedis:
    def __init__(self, auth_clients: str) -> None:
        self.tls_port = free_port()
        self.server: RedisServer = start_redis(extra_args=[
            "--tls-port", str(self.tls_port),
            "--tls-cert-file", str(TLS / "server.pem"), "--tls-key-file", str(TLS / "server.key"),
            "--tls-ca-cert-file", CA, "--tls-auth-clients", auth_clients,
        ])

    def url(self, host: str = "localhost") -> str:
        return f"rediss://{host}:{self.tls_port}/0"


def _server(auth_clients: str) -> Iterator[TLSRedis]:
    srv = TLSRedis(auth_clients)
    try:
        yield srv
    finally:
        srv.server.close()


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[TLSRedis]:
    """Clients need no certificate of their own."""
    yield from _server("no")


@pytest.fixture(scope="module")
def mtls_redis() -> Iterator[TLSRedis]:
    """Clients must present a certificate signed by the test CA."""
    yield from _server("yes")


def connect(url: str, **redis_keys: Any) -> Any:
    settings = Settings.from_dict({"redis": {"url": url, "connect_timeout": 2, **redis_keys}})
    return settings.redis.connect(retries=0)


def test_rediss_with_the_ca_writes_and_reads_windows(tls_redis: TLSRedis) -> None:
    r = connect(tls_redis.url(), ssl_cafile=CA)
    assert r.connection_pool.connection_kwargs["ssl_ca_certs"] == CA
    store = WindowStore(r, Catalogue.build(), "tls")
    t0 = 1_763_524_800_000
    res = store.apply([(Source("SCHEDULE-STATION-PARAM", 0, 7, t0), [Record("S1", "station_param", "latest", None,
                                                                          {"v": 1})])], t0)
    assert res.applied == 1
    got = store.read_windows("S1", ["station_param"])["station_param"]
    assert got == {"ts": t0, "src": "SCHEDULE-STATION-PARAM:0:7", "payload": {"v": 1}}
    assert r.zscore("tls:stations", "S1") is not None


def test_server_certificate_from_an_unknown_ca_is_refused(tls_redis: TLSRedis) -> None:
    with pytest.raises(StoreUnavailable, match="certificate verify failed"):
        connect(tls_redis.url(), ssl_cafile=OTHER_CA)
    with pytest.raises(StoreUnavailable, match="certificate verify failed"):
        connect(tls_redis.url())  # the system's CAs do not know the test CA


def test_host_name_is_checked_unless_turned_off(tls_redis: TLSRedis) -> None:
    # the server certificate names only "localhost"
    with pytest.raises(StoreUnavailable, match="mismatch"):
        connect(tls_redis.url("127.0.0.1"), ssl_cafile=CA)
    assert connect(tls_redis.url("127.0.0.1"), ssl_cafile=CA, ssl_check_hostname=False).ping()


def test_plain_redis_url_on_the_tls_port_fails_clearly(tls_redis: TLSRedis) -> None:
    with pytest.raises(StoreUnavailable, match="Redis unavailable at redis://localhost"):
        connect(f"redis://localhost:{tls_redis.tls_port}/0")


def test_mutual_tls_needs_the_client_certificate(mtls_redis: TLSRedis) -> None:
    with pytest.raises(StoreUnavailable):
        connect(mtls_redis.url(), ssl_cafile=CA)
    r = connect(mtls_redis.url(), ssl_cafile=CA, ssl_certfile=CLIENT_CERT, ssl_keyfile=CLIENT_KEY)
    assert r.set("k", "v") and r.get("k") == b"v"


def test_tls_files_come_from_the_environment(mtls_redis: TLSRedis) -> None:
    env = {"STATIONFLOW_REDIS_URL": mtls_redis.url(), "STATIONFLOW_REDIS_SSL_CAFILE": CA,
           "STATIONFLOW_REDIS_SSL_CERTFILE": CLIENT_CERT, "STATIONFLOW_REDIS_SSL_KEYFILE": CLIENT_KEY}
    settings = Settings.load(None, env=env)
    assert settings.redis.connect(retries=0).ping()
