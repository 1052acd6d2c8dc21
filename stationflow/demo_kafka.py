"""The demo's Kafka side: its topics created, the traffic generator in a thread of the demo's
process, and the uploads read back from the modules' output topics for the summary.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from stationflow.demo_children import DemoOptions


def create_topics(settings: Any, bootstrap: str, partitions: int) -> list[str]:
    from stationflow.sending import create_input_topics

    admin = {**settings.kafka.admin_config(), "bootstrap_servers": bootstrap}
    names = [t.topic for t in settings.catalogue.topics]
    create_input_topics(admin, names, partitions)
    from kafka.admin import KafkaAdminClient

    from stationflow.local import wait_for

    client = KafkaAdminClient(**admin)
    try:
        def all_there() -> bool:
            meta = client.describe_topics(names)
            return len(meta) == len(names) and all(not m.get("error_code") and m.get("partitions") for m in meta)

        wait_for(all_there, 30.0, f"{len(names)} topics in the broker's metadata", interval=0.2)
    finally:
        client.close()
    return names


def read_uploads(settings: Any, bootstrap: str, idle_s: float = 1.5) -> dict[str, dict[str, int]]:
    """What the workers uploaded, read back from every local module's output topic: messages,
    distinct batch ids (the key) and station results, per module. Read to the end rather
    than trusting end offsets (a local broker may under-report them)."""
    from kafka import KafkaConsumer, TopicPartition

    outs = {m.output_topic: m.name for m in settings.catalogue.modules if m.runs == "local"}
    counts = {m: {"messages": 0, "batches": 0, "results": 0} for m in outs.values()}
    keys: dict[str, set[bytes]] = {m: set() for m in outs.values()}
    consumer = KafkaConsumer(**{**settings.kafka.consumer_config(), "bootstrap_servers": bootstrap,
                                "group_id": None, "enable_auto_commit": False})
    try:
        tps = [TopicPartition(t, p) for t in outs for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            got = consumer.poll(timeout_ms=300)
            if got:
                quiet_since = time.monotonic()
            for tp, recs in got.items():
                m = outs[tp.topic]
                for rec in recs:
                    counts[m]["messages"] += 1
                    keys[m].add(rec.key or b"")
                    counts[m]["results"] += int(json.loads(rec.value).get("stations_count", 0))
    finally:
        consumer.close()
    for m, ks in keys.items():
        counts[m]["batches"] = len(ks)
    return counts


class Producer(threading.Thread):
    """The traffic generator, paced by its simulated clock, until the duration or `stop()`."""

    def __init__(self, settings: Any, bootstrap: str, opts: DemoOptions) -> None:
        super().__init__(name="stationflow-demo-producer", daemon=True)
        self.settings, self.bootstrap, self.opts = settings, bootstrap, opts
        self.halt = threading.Event()
        self.summary: Any = None
        self.error: BaseException | None = None
        self.bad = 0

    def stop(self) -> None:
        self.halt.set()

    def _messages(self, source: Iterator[Any]) -> Iterator[Any]:
        for m in source:
            if self.halt.is_set():
                return
            self.bad += m.reason is not None
            yield m

    def run(self) -> None:
        from kafka import KafkaProducer

        from stationflow.sending import send_traffic
        from stationflow.traffic import SimClock, Traffic

        try:
            o = self.opts
            traffic = Traffic(stations=o.stations, seed=o.seed, catalogue=self.settings.catalogue, bad_rate=o.bad_rate)
            producer = KafkaProducer(**{**self.settings.kafka.producer_config(), "bootstrap_servers": self.bootstrap})
            try:
                self.summary = send_traffic(self._messages(traffic.messages()), producer,
                                            SimClock(traffic.start_ms, o.speed), duration_s=o.duration_s,
                                            progress_s=3600, echo=lambda _s: None)
            finally:
                producer.close(timeout=10)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.error = e

