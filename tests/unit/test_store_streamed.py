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
