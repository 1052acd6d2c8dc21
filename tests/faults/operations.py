"""Helpers of the operations scenarios (worker outages, slow modules, group resets): paced
sending, the pending markers and queued jobs at a moment, and the batches created since."""

from __future__ import annotations

import threading
import time
from typing import Any

from harness import Sender


def paced_send(sender: Sender, messages: list[Any], seconds: float, out: list[Any],
               stop: threading.Event | None = None) -> None:
    """Spread the messages over `seconds` (flushing every 100), then collect their coordinates."""
    t0 = time.monotonic()
    for i, m in enumerate(messages):
        sender.send(m.topic, m.value, m.timestamp_ms)
        if i % 100 == 0:
            sender.producer.flush()
            due = t0 + seconds * (i + 1) / len(messages)
            time.sleep(max(0.0, due - time.monotonic()))
            if stop is not None and stop.is_set():
                break
    out.extend(sender.results())


def start_paced(sender: Sender, messages: list[Any], seconds: float,
                stop: threading.Event | None = None) -> tuple[threading.Thread, list[Any]]:
    """`paced_send` on a thread; `stop` ends the sending early (what was sent is collected)."""
    out: list[Any] = []
    t = threading.Thread(target=paced_send, args=(sender, messages, seconds, out, stop), daemon=True)
    t.start()
    return t, out


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def pending_runs(r: Any, prefix: str) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """((station, module) -> batch id of every pending run, station -> id of the job meant
    to take them)."""
    runs: dict[tuple[str, str], str] = {}
    jobs: dict[str, str] = {}
    for key in r.scan_iter(match=f"{prefix}:{{*}}:pending", count=1000):
        k = _text(key)
        station = k[len(prefix) + 2:k.rindex("}")]
        for f, v in r.hgetall(key).items():
            f = _text(f)
            if f == "_job":
                jobs[station] = _text(v)
            elif not f.startswith("_"):
                runs[(station, f)] = _text(v).lstrip("?")  # reserved: batch being created
    return runs, jobs


def jobs_not_waiting(r: Any, jobs: dict[str, str]) -> list[str]:
    """Stations whose pending runs have no job waiting in RQ (dropped, e.g. by a TTL)."""
    pipe = r.pipeline(transaction=False)
    for jid in jobs.values():
        pipe.hget(f"rq:job:{jid}", "status")
    return [s for s, st in zip(jobs, pipe.execute(), strict=True) if st not in (b"queued", b"started")]


def created_since(batches: dict[str, dict[str, str]], since_ms: int) -> dict[str, dict[str, str]]:
    return {b: h for b, h in batches.items() if int(h.get("created", 0) or 0) >= since_ms}


def incomplete(batches: dict[str, dict[str, str]]) -> list[str]:
    """Batches that did not get every expected station's report by their deadline."""
    return sorted(b for b, h in batches.items()
                  if int(h.get("reported", 0) or 0) < int(h.get("n_expected", 0) or 0)
                  or int(h.get("timed_out", 0) or 0) > 0
                  or h.get("state") not in ("uploaded", "skipped"))


def markers_left(r: Any, prefix: str) -> int:
    """Pending and running markers still in Redis (0 once every run was taken and reported)."""
    return sum(1 for _ in r.scan_iter(match=f"{prefix}:{{*}}:pending", count=1000)) + \
        sum(1 for _ in r.scan_iter(match=f"{prefix}:{{*}}:running:*", count=1000))
