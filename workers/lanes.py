"""Algorithm calls on long-lived daemon threads ("lanes"), with a per-call timeout.

Why threads and not a signal timer: RQ's SimpleWorker owns SIGALRM for its job timeout in the
worker's main thread. A lane runs one call at a time; a station job holds one lane per module
it runs at once (modules whose in-job dependencies have finished run side by side, so a slow
module does not hold back the others). Idle lanes are kept for the next job. A call that
times out cannot be killed: its lane is abandoned (daemon, so it never blocks the process
exit) and never reused; RQ's job timeout remains the last resort.

`async def` algorithms (and hooks) are run with `asyncio.run` on the lane, so an event loop
never leaks between calls.
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import threading
from collections.abc import Callable
from typing import Any

from workers.algorithms import is_async


class AlgorithmTimeout(Exception):
    pass


class Call:
    """One call handed to a lane: its result or error once `done` is set. `notify` (a queue
    the caller waits on) receives the call when it ends, so one thread can wait for several."""

    __slots__ = ("fn", "args", "done", "value", "error", "notify", "lane", "tag")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], notify: queue.SimpleQueue[Call] | None = None,
                 tag: Any = None) -> None:
        self.fn = fn
        self.args = args
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.notify = notify
        self.lane: _Lane | None = None
        self.tag = tag

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def run_maybe_async(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), awaited (on a fresh event loop) when fn is `async def` or returns an awaitable."""
    if is_async(fn):
        return asyncio.run(fn(*args))
    out = fn(*args)
    if inspect.isawaitable(out):
        return asyncio.run(_await(out))
    return out


async def _await(aw: Any) -> Any:
    return await aw


class _Lane:
    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[Call] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name="stationflow-algorithm", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            call = self.inbox.get()
            try:
                call.value = run_maybe_async(call.fn, *call.args)
            except BaseException as e:  # noqa: BLE001 - handed to the caller, which reports it
                call.error = e
            call.done.set()
            if call.notify is not None:
                call.notify.put(call)


_idle: list[_Lane] = []
_idle_lock = threading.Lock()


def submit(call: Call) -> Call:
    """Start `call` on an idle lane (a new one when none is idle)."""
    with _idle_lock:
        lane = _idle.pop() if _idle else None
    if lane is None:
        lane = _Lane()
    call.lane = lane
    lane.inbox.put(call)
    return call


def release(call: Call) -> None:
    """Give the finished call's lane back for reuse (never a lane whose call is still running)."""
    lane, call.lane = call.lane, None
    if lane is not None and call.done.is_set():
        with _idle_lock:
            _idle.append(lane)


def abandon(call: Call) -> None:
    """Forget a timed-out call's lane: it finishes (or hangs) on its own, never reused."""
    call.lane = None


def call_hook(fn: Callable[..., Any], *args: Any) -> Any:
    """A hook call: a plain function is called here; an `async def` one (or one returning an
    awaitable) is awaited on a lane, so it works from a thread that runs an event loop too."""
    if is_async(fn):
        return _on_lane(fn, args)
    out = fn(*args)
    if inspect.isawaitable(out):
        return _on_lane(_await, (out,))
    return out


def _on_lane(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    call = submit(Call(fn, args))
    call.done.wait()
    release(call)
    return call.result()


def call_with_timeout(fn: Callable[..., Any], station: str, inp: Any, timeout_s: float) -> Any:
    """fn(station, inp) on a lane; AlgorithmTimeout after `timeout_s` (the lane is abandoned)."""
    call = submit(Call(fn, (station, inp)))
    if not call.done.wait(timeout_s if timeout_s and timeout_s > 0 else None):
        abandon(call)
        raise AlgorithmTimeout(f"no result after {timeout_s} s")
    release(call)
    return call.result()
