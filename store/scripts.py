"""Lua scripts called by SHA inside pipelines, without redis-py's hidden round trip.

redis-py's `Script` objects, when called on a pipeline, make `Pipeline.execute` send
`SCRIPT EXISTS` (and wait for it) before the pipeline itself: one extra round trip per
pipeline, on every station job. Here a pipeline queues plain `EVALSHA`s and is executed
with `raise_on_error=False`; a call refused with NOSCRIPT (Redis restarted, `SCRIPT FLUSH`)
had no effect, so only those calls are sent again after `SCRIPT LOAD`, in their order, and
every other command of the pipeline ran exactly once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis


class LuaScript:
    """A script body and its SHA1 (computed here, as Redis does: no round trip to register)."""

    __slots__ = ("name", "body", "sha")

    def __init__(self, name: str, body: str) -> None:
        self.name = name
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()

    @classmethod
    def from_file(cls, name: str) -> LuaScript:
        """A script of store/lua/."""
        return cls(name, (resources.files("store") / "lua" / name).read_text())

    def load(self, r: redis.Redis) -> None:
        r.script_load(self.body)


class ScriptPipeline:
    """A non-transactional pipeline that remembers where its script calls are, so `execute`
    can re-send the ones Redis did not know. Any other command goes straight to `.pipe`."""

    __slots__ = ("r", "pipe", "_calls")

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self.pipe = r.pipeline(transaction=False)
        self._calls: list[tuple[int, LuaScript, tuple[Any, ...]]] = []

    def __len__(self) -> int:
        return len(self.pipe)

    def call(self, script: LuaScript, keys: Sequence[Any], args: Sequence[Any]) -> int:
        """Queue `script` with `keys` and `args`; returns the index of its reply."""
        at = len(self.pipe)
        a = (script.sha, len(keys), *keys, *args)
        self.pipe.evalsha(*a)
        self._calls.append((at, script, a))
        return at

    def execute(self) -> list[Any]:
        """Every reply, in order; raises the first error that is not a NOSCRIPT (after the
        whole pipeline ran, as redis-py does)."""
        return resend_noscript(self.r, self.pipe.execute(raise_on_error=False), self._calls)


def resend_noscript(r: redis.Redis, replies: list[Any],
                    calls: Sequence[tuple[int, LuaScript, tuple[Any, ...]]]) -> list[Any]:
    """`replies` of a pipeline (errors returned, not raised) with the script calls that Redis
    answered NOSCRIPT loaded and sent again, in their order, in one more round trip. `calls`
    are (reply index, script, EVALSHA arguments: sha, numkeys, keys..., args...). Then raises
    the first error left in `replies`, if any."""
    again = [(at, script, a) for at, script, a in calls
             if isinstance(replies[at], redis.exceptions.NoScriptError)]
    if again:
        for script in {id(s): s for _, s, _ in again}.values():
            script.load(r)
        retry = r.pipeline(transaction=False)
        for _, _, a in again:
            retry.evalsha(*a)
        for (at, _, _), v in zip(again, retry.execute(raise_on_error=False), strict=True):
            replies[at] = v
    for v in replies:
        if isinstance(v, Exception):
            raise v
    return replies
