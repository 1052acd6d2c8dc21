"""store.streamed: replies in order, errors returned not raised, the connection reusable after."""

from __future__ import annotations

import pytest
import redis

from store.streamed import run_pipelined, run_streamed


@pytest.fixture
def r(fake_redis):
    return fake_redis


@pytest.mark.parametrize("run", [run_streamed, run_pipelined])
def test_replies_in_order_with_errors_returned(r, run):
    built = []

    def commands():
        for c in (("SET", "a", "1"), ("INCR", "a"), ("HGET", "a", "f"), ("INCRBY", "a", 5)):
            built.append(c)
            yield c

    out = run(r, commands())
    assert built == [("SET", "a", "1"), ("INCR", "a"), ("HGET", "a", "f"), ("INCRBY", "a", 5)]
    assert out[0] in (b"OK", True) and out[1] == 2 and out[3] == 7
    assert isinstance(out[2], redis.exceptions.ResponseError) and "WRONGTYPE" in str(out[2])
    assert r.get("a") == b"7"  # the pooled connection is still in step
    assert run(r, iter([("GET", "a")])) == [b"7"]


def test_a_failure_while_building_leaves_no_half_read_connection(r):
    def commands():
        yield ("SET", "b", "1")
        raise ValueError("encoding failed")

    with pytest.raises(ValueError):
        run_streamed(r, commands())
    assert run_streamed(r, iter([("INCR", "b")])) == [2]  # the SET ran; the next call reads its own reply


@pytest.mark.parametrize("run", [run_streamed, run_pipelined])
def test_on_reply_sees_each_reply_once_in_order(r, run):
    seen = []
    out = run(r, iter([("SET", "c", "1"), ("INCR", "c"), ("HGET", "c", "f")]), lambda i, x: seen.append((i, x)))
    assert [i for i, _ in seen] == [0, 1, 2] and [x for _, x in seen] == out


def test_on_reply_after_a_fallback_only_sees_the_replies_it_missed(r, monkeypatch):
    """A connection lost after the first reply: the pipeline fallback re-runs every command, and
    on_reply gets indexes 1 and 2 from it, never index 0 twice."""
    r.ping()  # the pooled connection is connected: its handshake is not among the reads counted
    conn_cls = r.connection_pool.connection_class
    real = conn_cls.read_response
    reads = []

    def flaky(self, *a, **kw):
        reads.append(1)
        if len(reads) == 2:
            raise redis.exceptions.ConnectionError("injected")
        return real(self, *a, **kw)

    monkeypatch.setattr(conn_cls, "read_response", flaky)
    seen = []
    out = run_streamed(r, iter([("INCR", "d"), ("INCR", "d"), ("INCR", "d")]), lambda i, x: seen.append((i, x)))
    # all three INCRs ran before the loss, then again in the fallback pipeline
    assert r.get("d") == b"6" and out == [4, 5, 6]
    assert seen == [(0, 1), (1, 5), (2, 6)]
