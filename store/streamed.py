"""Streamed pipelines: one round trip like `pipeline.execute()`, but each command goes out as
soon as it is built, so Redis runs the first (long) script calls while Python still encodes
the next ones; on a single Redis that hides most of the client's share of a write.

Replies are returned, errors included (like `execute(raise_on_error=False)`). A connection
error falls back to an ordinary pipeline of every command (its retries and reconnects); the
store's scripts are idempotent, so commands that already ran may run again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis


def run_pipelined(r: Any, commands: Iterable[tuple[Any, ...]]) -> list[Any]:
    """Every command in one ordinary pipeline (Redis Cluster, or a client without a pool)."""
    pipe = r.pipeline(transaction=False)
    for c in commands:
        pipe.execute_command(*c)
    return pipe.execute(raise_on_error=False)


def run_streamed(r: Any, commands: Iterable[tuple[Any, ...]]) -> list[Any]:
    pool = getattr(r, "connection_pool", None)
    if pool is None:
        return run_pipelined(r, commands)
    sent: list[tuple[Any, ...]] = []
    it = iter(commands)
    conn = pool.get_connection()
    try:
        for c in it:
            sent.append(c)
            conn.send_packed_command(conn.pack_command(*c))
        out: list[Any] = []
        for _ in sent:
            try:
                out.append(conn.read_response())
            except redis.exceptions.ResponseError as e:
                out.append(e)
        return out
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        conn.disconnect()
        sent.extend(it)
        return run_pipelined(r, sent)
    except BaseException:
        conn.disconnect()  # replies may be left unread: never reuse this socket as is
        raise
    finally:
        pool.release(conn)
