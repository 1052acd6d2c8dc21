"""`stationflow produce`: send realistic traffic (stationflow.traffic) to the input topics,
paced and summarised by stationflow.sending."""

from __future__ import annotations

import json
import signal
import time

import click

from stationflow.sending import create_input_topics, send_traffic
from stationflow.traffic import (
    DEFAULT_MAX_MESSAGE_BYTES,
    INPUT_ALIASES,
    SimClock,
    Traffic,
    local_time,
)


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
