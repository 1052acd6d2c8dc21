"""The consumer's rebalance listener: kafka-python calls it from inside `poll()`, and it hands
each event to the ingester (commit what is done before partitions go, pause what arrives
while paused, forget what was lost)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest.loop import Ingester

log = logging.getLogger("ingest.loop")


def make_listener(ingester: Ingester) -> Any:
    from kafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: Any) -> None:
            ingester.on_revoked(revoked)

        def on_partitions_assigned(self, assigned: Any) -> None:
            ingester.on_assigned(assigned)

        def on_partitions_lost(self, lost: Any) -> None:
            # lost (not revoked): someone else may already own them; commit nothing
            ingester.book.forget(lost)
            log.warning("partitions lost: %s", tps_text(lost))

    return Listener()


def tps_text(tps: Iterable[Any]) -> str:
    return ", ".join(f"{t.topic}[{t.partition}]" for t in sorted(tps, key=lambda t: (t.topic, t.partition)))
