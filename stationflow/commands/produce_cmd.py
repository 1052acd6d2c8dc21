"""`stationflow produce`: send realistic traffic (stationflow.traffic) to the input topics.

The generator is pure; this file owns the edges: Kafka producer, wall-clock pacing, the
rate cap, progress lines and the per-topic summary. Values are sent with no key (as the
real producers do, spec §3) and the simulated time as the record timestamp.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import click

from stationflow.traffic import (
    DEFAULT_MAX_MESSAGE_BYTES,
    INPUT_ALIASES,
    Message,
    SimClock,
    Traffic,
    local_time,
)


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


def _parse_start(text: str | None) -> int | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    import calendar

    try:
        tm = time.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise click.BadParameter("use epoch ms or station-local 'YYYY-MM-DD HH:MM:SS'", param_hint="--start") from None
    return (calendar.timegm(tm) - 8 * 3600) * 1000


def _split_topics(values: tuple[str, ...]) -> list[str] | None:
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


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


@click.command("produce")
@click.option("--stations", default=20, show_default=True, type=click.IntRange(min=1), help="Number of stations.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed and --start = same messages.")
@click.option("--speed", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Simulated seconds per wall second; 0 = as fast as possible.")
@click.option("--duration", type=click.FloatRange(min=0), help="Stop after this many wall-clock seconds.")
@click.option("--count", type=click.IntRange(min=0), help="Stop after this many messages.")
@click.option("--bad-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Probability of a labelled bad message after each good one.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Cap: at most this many messages per second.")
@click.option("--topics", multiple=True, help="Only these topics (aliases or names; repeat or comma-separate).")
@click.option("--start", help="Simulated start: epoch ms or station-local 'YYYY-MM-DD HH:MM:SS'. Default: now.")
@click.option("--bootstrap", envvar=None, help="Kafka bootstrap servers (default: settings / STATIONFLOW_KAFKA).")
@click.option("--create-topics", is_flag=True, help="Create missing input topics first.")
@click.option("--partitions", default=4, show_default=True, type=click.IntRange(min=1),
              help="Partitions for --create-topics.")
@click.option("--max-message-bytes", default=DEFAULT_MAX_MESSAGE_BYTES, show_default=True, type=click.IntRange(min=1024),
              help="Split multi-station pushes to stay under the broker's message size limit.")
@click.option("--progress", "progress_s", default=5.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between progress lines.")
@click.option("--json", "as_json", is_flag=True,
              help="No progress lines; the summary as one JSON object (sent, errors, per topic).")
@click.pass_context
def produce(ctx: click.Context, stations: int, seed: int, speed: float, duration: float | None, count: int | None,
            bad_rate: float, rate: float | None, topics: tuple[str, ...], start: str | None, bootstrap: str | None,
            create_topics: bool, partitions: int, max_message_bytes: int, progress_s: float, as_json: bool) -> None:
    """Send realistic traffic for all input topics (or --topics) until --count, --duration or Ctrl-C.

    Kafka record timestamps are the simulated clock: with --speed above 1 they run ahead of
    the wall clock, as a replay of the future would."""

    from kafka import KafkaProducer

    from stationflow.cli import CommandFailed, get_settings

    settings = get_settings(ctx)  # exits 2 with "config error: ..." on a bad configuration

    def say(line: str) -> None:
        if not as_json:
            click.echo(line)
    try:
        traffic = Traffic(stations=stations, seed=seed, start_ms=_parse_start(start), catalogue=settings.catalogue,
                          topics=_split_topics(topics), bad_rate=bad_rate, max_message_bytes=max_message_bytes)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    cfg = settings.kafka.producer_config()
    if bootstrap:
        cfg["bootstrap_servers"] = bootstrap
    if create_topics:
        admin = settings.kafka.admin_config()
        if bootstrap:
            admin["bootstrap_servers"] = bootstrap
        names = [traffic.topic_of(a) for a in INPUT_ALIASES if a in traffic.aliases]
        made = create_input_topics(admin, names, partitions)
        say(f"created {len(made)} topic(s)" + (f": {', '.join(made)}" if made else ""))
    producer = KafkaProducer(**cfg)
    clock = SimClock(traffic.start_ms, speed)
    say(f"producing {stations} stations (seed {seed}) to {cfg['bootstrap_servers']}, "
               f"speed {'max' if speed == 0 else speed}, from {local_time(traffic.start_ms)} (UTC+8)")
    old = signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C under compose
    try:
        summary = send_traffic(traffic.messages(), producer, clock, duration_s=duration, count=count, rate=rate,
                               progress_s=progress_s, echo=say)
    finally:
        signal.signal(signal.SIGTERM, old)
        producer.close(timeout=10)
    click.echo(json.dumps(summary.to_dict()) if as_json else summary.table())
    if summary.errors:
        raise CommandFailed(f"{summary.errors} message(s) failed to send")
