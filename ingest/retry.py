"""Which failures are outages (retry, commit nothing) and how long to wait between attempts.

An outage of Redis, the queue or Kafka is never bad input (spec §6.7): the poll's work is
kept and re-applied once the dependency is back, which is safe because every write is
idempotent. Anything not recognised here is a bug or bad configuration and stops the process.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import redis

from store.connection import StoreAuthError, StoreUnavailable

#: Redis error replies that mean "not now" rather than "wrong": a script still running, a
#: replica loading or promoted, a cluster slot moving, a master that lost its replicas.
_TRANSIENT_REPLY_PREFIXES = ("BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN",
                             "NOREPLICAS", "MOVED", "ASK")


def is_store_outage(exc: BaseException) -> bool:
    """True for a Redis/queue failure worth retrying; wrong passwords are configuration."""
    if isinstance(exc, StoreAuthError | redis.AuthenticationError):
        return False
    if isinstance(exc, StoreUnavailable | redis.ConnectionError | redis.TimeoutError
                  | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, redis.ResponseError):
        return str(exc).upper().startswith(_TRANSIENT_REPLY_PREFIXES)
    return False


def is_kafka_outage(exc: BaseException) -> bool:
    """True for a retriable Kafka client failure (broker gone, coordinator moving, timeouts)."""
    from kafka import errors as ke

    if isinstance(exc, ke.KafkaConnectionError | ke.KafkaTimeoutError | ke.NodeNotReadyError):
        return True
    return isinstance(exc, ke.KafkaError) and bool(getattr(exc, "retriable", False))


@dataclass
class Backoff:
    """Exponential delays with full jitter, capped; `reset()` after a success."""

    base_s: float = 0.1
    cap_s: float = 10.0
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** self.attempts))
        self.attempts += 1
        # half fixed, half jitter: never a busy loop, and many ingesters do not retry in step
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempts = 0
