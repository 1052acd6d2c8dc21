"""Streamed pipelines: one round trip like `pipeline.execute()`, but each command goes out as
soon as it is built, so Redis runs the first (long) script calls while Python still encodes
the next ones; on a single Redis that hides most of the client's share of a write.

Replies are returned, errors included (like `execute(raise_on_error=False)`). A connection
error falls back to an ordinary pipeline of every command (its retries and reconnects); the
store's scripts are idempotent, so commands that already ran may run again.

`on_reply(index, reply)`, when given, sees each reply as soon as it is read, while Redis still
runs the later commands: the caller's work on early replies overlaps the server's on the rest.
It is called exactly once per command index, in order (after a fallback, only for the replies
it had not seen yet).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import redis

OnReply = Callable[[int, Any], None]


def run_pipelined(r: Any, commands: Iterable[tuple[Any, ...]], on_reply: OnReply | None = None,
                  seen: int = 0) -> list[Any]:
    """Every command in one ordinary pipeline (Redis Cluster, or a client without a pool);
    `on_reply` is called for the replies from index `seen` on."""
    pipe = r.pipeline(transaction=False)
    for c in commands:
        pipe.execute_command(*c)
    out = pipe.execute(raise_on_error=False)
    if on_reply is not None:
        for i in range(seen, len(out)):
            on_reply(i, out[i])
    return out


def run_streamed(r: Any, commands: Iterable[tuple[Any, ...]], on_reply: OnReply | None = None) -> list[Any]:
    pool = getattr(r, "connection_pool", None)
    if pool is None:
        return run_pipelined(r, commands, on_reply)
    sent: list[tuple[Any, ...]] = []
    out: list[Any] = []
    it = iter(commands)
    conn = pool.get_connection()
    try:
        for c in it:
            sent.append(c)
            conn.send_packed_command(conn.pack_command(*c))
        for i in range(len(sent)):
            try:
                reply = conn.read_response()
            except redis.exceptions.ResponseError as e:
                reply = e
            out.append(reply)
            if on_reply is not None:
                on_reply(i, reply)
        return out
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        conn.disconnect()
        sent.extend(it)
        return run_pipelined(r, sent, on_reply, seen=len(out))
    except BaseException:
        conn.disconnect()  # replies may be left unread: never reuse this socket as is
        raise
    finally:
        pool.release(conn)
