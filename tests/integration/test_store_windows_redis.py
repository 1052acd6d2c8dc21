"""The WindowStore cases of tests/unit/test_store_windows.py, on a real redis-server: the Lua
scripts must behave the same under Redis's Lua 5.1 as under fakeredis's lupa."""

from __future__ import annotations

import pytest
from unit.test_store_windows import *  # noqa: F403  (the same cases, collected here again)


@pytest.fixture
def r(redis_client):  # noqa: F811  (overrides the fakeredis fixture of the imported module)
    return redis_client


def test_apply_survives_a_dead_connection(redis_url, redis_client, monkeypatch):
    """A connection killed between polls is replaced by the pool; one that fails while the
    calls are being sent makes apply fall back to a pipeline (with reconnects). Either way the
    writes are exact."""
    import redis as redis_py

    import store.streamed
    from parsers.catalogue import Catalogue
    from store.keys import Keys
    from store.windows import WindowStore

    r = redis_py.Redis.from_url(redis_url)
    ws = WindowStore(r, Catalogue.build())
    ws.apply([dev(S1, "H1", 1, T0)], T0)  # noqa: F405
    assert redis_client.client_kill_filter(_type="normal", skipme=True) >= 1
    res = ws.apply([dev(S1, "H1", 1, T0), dev(S1, "H2", 2, T0 + 1)], T0 + 1)  # noqa: F405
    assert (res.applied, res.replays_skipped) == (1, 1)

    fallbacks, failed = [], []
    pipelined = store.streamed.run_pipelined
    monkeypatch.setattr(store.streamed, "run_pipelined",
                        lambda r, cmds, *a, **kw: fallbacks.append(1) or pipelined(r, cmds, *a, **kw))
    send = redis_py.connection.Connection.send_packed_command

    def flaky(self, command, check_health=True):
        if not failed:
            failed.append(1)
            send(self, command, check_health)  # the first call reaches Redis, then the link "drops"
            raise redis_py.exceptions.ConnectionError("injected")
        return send(self, command, check_health)

    monkeypatch.setattr(redis_py.connection.Connection, "send_packed_command", flaky)
    res = ws.apply([dev(S1, "H3", 3, T0 + 2), dev(S1, "H1", 4, T0 + 3)], T0 + 3)  # noqa: F405
    assert fallbacks == [1]
    assert res.applied + res.replays_skipped == 2  # a call that ran before the drop is a replay now
    k = Keys()
    assert sorted(redis_client.hkeys(k.devices(S1, "device_host_dcdc"))) == [b"H1", b"H2", b"H3"]  # noqa: F405
    assert redis_client.hget(k.meta(S1), "hwm:SCHEDULE-DEVICE-HOST-DCDC:0") == b"4"  # noqa: F405


def test_meta_hash_is_a_hash_table_and_says_what_it_holds(redis_client):
    """The meta hash carries an 'about' text longer than hash-max-listpack-value, so Redis
    keeps it as a hash table: the per-call reads of its fields are lookups, not scans."""
    from parsers.catalogue import Catalogue
    from store.keys import Keys
    from store.windows import WindowStore

    ws = WindowStore(redis_client, Catalogue.build())
    ws.apply([dev(S1, "H1", 1, T0)], T0)  # noqa: F405
    meta = Keys("sf").meta(S1)  # noqa: F405
    limit = int(redis_client.config_get("hash-max-*-value").popitem()[1])
    about = redis_client.hget(meta, "about")
    assert about and b"hwm:" in about and len(about) > limit
    assert redis_client.object("encoding", meta) == b"hashtable"
