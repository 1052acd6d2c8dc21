"""Sending traffic to Kafka: wall-clock pacing, the rate cap, progress lines, the per-topic
summary, and creating the input topics. Used by `stationflow produce` and the demo.

The generator (`stationflow.traffic`) is pure; this module owns the edges. Values are sent
with no key (as the real producers do, spec §3) and the simulated time as the record
timestamp.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from stationflow.traffic import Message, SimClock, local_time


class Producer(Protocol):
    def send(self, topic: str, value: bytes, timestamp_ms: int) -> Any: ...
    def flush(self, timeout: float | None = None) -> None: ...


@dataclass
class TopicStats:
    sent: int = 0
    bytes: int = 0
    bad: int = 0
    errors: int = 0


@dataclass
class Summary:
    per_topic: dict[str, TopicStats] = field(default_factory=dict)
    elapsed_s: float = 0.0
    sim_ms: int = 0
    interrupted: bool = False

    @property
    def sent(self) -> int:
        return sum(s.sent for s in self.per_topic.values())

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.per_topic.values())

    def table(self) -> str:
        w = max([len("topic")] + [len(t) for t in self.per_topic])
        lines = [f"{'topic':<{w}}  {'sent':>9}  {'bad':>6}  {'errors':>6}  {'MiB':>8}"]
        for t in sorted(self.per_topic):
            s = self.per_topic[t]
            lines.append(f"{t:<{w}}  {s.sent:>9}  {s.bad:>6}  {s.errors:>6}  {s.bytes / 2**20:>8.2f}")
        total = TopicStats(self.sent, sum(s.bytes for s in self.per_topic.values()),
                           sum(s.bad for s in self.per_topic.values()), self.errors)
        lines.append(f"{'total':<{w}}  {total.sent:>9}  {total.bad:>6}  {total.errors:>6}  {total.bytes / 2**20:>8.2f}")
        rate = self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines.append(f"{self.sent} messages in {self.elapsed_s:.1f} s ({rate:.0f}/s), "
                     f"simulated clock at {local_time(self.sim_ms)} (UTC+8)"
                     + (" — interrupted" if self.interrupted else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """`produce --json`: the table's figures."""
        return {"sent": self.sent, "errors": self.errors, "elapsed_s": round(self.elapsed_s, 3),
                "simulated_ms": self.sim_ms, "interrupted": self.interrupted,
                "per_topic": {t: {"sent": s.sent, "bad": s.bad, "errors": s.errors, "bytes": s.bytes}
                              for t, s in sorted(self.per_topic.items())}}


def send_traffic(
    messages: Iterable[Message],
    producer: Producer,
    clock: SimClock,
    *,
    duration_s: float | None = None,
    count: int | None = None,
    rate: float | None = None,
    progress_s: float = 5.0,
    echo: Callable[[str], None] = print,
    now: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Summary:
    """Send until `count` messages or `duration_s` wall seconds (or the messages end, or
    Ctrl-C), pacing by `clock` and capping at `rate` msgs/s. Always flushes before returning."""
    summary = Summary(sim_ms=clock.start_ms)
    t0 = now()
    deadline = None if duration_s is None else t0 + duration_s
    next_progress = t0 + progress_s
    last_sent, last_t = 0, t0

    def progress(t: float) -> None:
        nonlocal next_progress, last_sent, last_t
        sent = summary.sent
        echo(f"sent {sent} ({(sent - last_sent) / max(t - last_t, 1e-9):.0f}/s), bad {sum(s.bad for s in summary.per_topic.values())}, "
             f"errors {summary.errors}, simulated {local_time(summary.sim_ms)}")
        last_sent, last_t = sent, t
        next_progress = t + progress_s

    def pause_until(target: float) -> bool:
        """Sleep towards `target` in short steps; False when the deadline comes first."""
        while True:
            t = now()
            if deadline is not None and t >= deadline:
                return False
            if t >= next_progress:
                progress(t)
            if t >= target:
                return True
            sleep(min(target - t, 0.25))

    def errback(stats: TopicStats) -> Callable[[Exception], None]:
        def on_error(_exc: Exception) -> None:
            stats.errors += 1
        return on_error

    try:
        for m in messages:
            if count is not None and summary.sent >= count:
                break
            t = now()
            wait = clock.wait_s(m.timestamp_ms, t - t0)
            if rate:
                wait = max(wait, t0 + summary.sent / rate - t)
            if wait > 0 and not pause_until(t + wait):
                break
            if deadline is not None and now() >= deadline:
                break
            stats = summary.per_topic.setdefault(m.topic, TopicStats())
            fut = producer.send(m.topic, value=m.value, timestamp_ms=m.timestamp_ms)
            if hasattr(fut, "add_errback"):
                fut.add_errback(errback(stats))
            stats.sent += 1
            stats.bytes += len(m.value)
            stats.bad += m.reason is not None
            summary.sim_ms = m.timestamp_ms
            if now() >= next_progress:
                progress(now())
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        try:
            producer.flush(timeout=30)
        except KeyboardInterrupt:
            summary.interrupted = True
        summary.elapsed_s = now() - t0
    return summary


def create_input_topics(admin_config: dict[str, Any], names: Iterable[str], partitions: int) -> list[str]:
    """Create missing topics; returns the ones created."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**admin_config)
    created = []
    try:
        existing = set(admin.list_topics())
        for n in names:
            if n in existing:
                continue
            try:
                admin.create_topics([NewTopic(name=n, num_partitions=partitions, replication_factor=1)])
                created.append(n)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    return created
