"""The ingester's poll loop: poll → process (retrying outages) → commit, with rebalance
handling, queue backpressure, the periodic order closer, graceful stop and idle exit.

Kafka-facing only: the work of a poll is `ingest.process.Processor`. The loop owns the
ordering guarantee (spec §6.8): a partition's offset is committed only after everything
polled from it so far was written and scheduled, and a revoked partition is committed
before it is released when its work could be finished.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ingest.backpressure import QueueGate
from ingest.consumer import start_from_earliest_if_uncommitted
from ingest.offsets import TP, OffsetBook, consumer_lag
from ingest.options import LoopOptions
from ingest.process import InFlight, Processor
from ingest.rebalance import tps_text
from ingest.retry import Backoff, is_kafka_outage, is_store_outage
from ingest.stats import IngestStats
from store.connection import StoreUnavailable

log = logging.getLogger(__name__)

EXIT_OK = 0


class Ingester:
    """The consumer loop. `queue_depth()` and `gate` make backpressure (none without them);
    `clock`, `sleep` and `backoff` are injected by the tests."""

    def __init__(self, consumer: Any, processor: Processor, stats: IngestStats,
                 options: LoopOptions | None = None, *, queue_depth: Callable[[], int] | None = None,
                 gate: QueueGate | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, backoff: Backoff | None = None) -> None:
        o = options or LoopOptions()
        self.consumer = consumer
        self.processor = processor
        self.stats = stats
        self.max_records = o.max_records
        # the order closer and backpressure run between polls: never wait longer than them
        self.poll_timeout_ms = int(min(o.poll_timeout_ms, o.close_interval_s * 1000))
        self.commit_interval_s = o.commit_interval_s
        self.close_interval_s = o.close_interval_s
        self.summary_interval_s = o.summary_interval_s
        self.queue_depth = queue_depth
        self.gate = gate
        self.depth_interval_s = o.depth_interval_s
        self.until_idle_s = o.until_idle_s
        #: called with the lag of every owned partition after each check (metrics)
        self.on_lag: Callable[[dict[TP, int]], None] | None = None
        #: called before every commit (Redis Cluster: wait for the replicas); raising
        #: StoreUnavailable skips the commit, which is tried again at the next interval
        self.before_commit: Callable[[], Any] | None = None
        #: called with the partitions this ingester no longer owns (metrics drop their series)
        self.on_released: Callable[[list[TP]], None] | None = None
        self.clock = clock
        self.sleep = sleep
        self.backoff = backoff or Backoff()
        self.kafka_backoff = Backoff()
        self.book = OffsetBook()
        self.inflight: InFlight | None = None
        self.pause_reasons: set[str] = set()
        #: topics read from the earliest offset when the group has none (spec §6.9), set by
        #: the service when `auto_offset_reset` would start them elsewhere; their newly
        #: assigned partitions are checked once, after the poll that assigned them
        self.slow_topics: frozenset[str] = frozenset()
        self._slow_unchecked: set[Any] = set()
        self.stopping = False
        self.last_depth: int | None = None
        self._runs_since_depth = 0  # runs scheduled since the last depth read (bounds new jobs)
        now = clock()
        self._last_commit = now
        self._last_close = 0.0
        self._last_depth_check = 0.0
        self._last_summary = now
        self._last_activity: float | None = None  # last record or commit; None until assigned
        self._summary_base = (0, 0)
        self._store_failing = False
        self._kafka_failing = False
        self._gc_paused = False
        self._loop_thread: threading.Thread | None = None  # the thread running run()

    # ---- control --------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the current poll, commit and return (signal-safe)."""
        self.stopping = True

    def run(self) -> int:
        self._loop_thread = threading.current_thread()
        try:
            while not self.stopping:
                self._tick()
                records = self._poll()
                if records:
                    self._last_activity = self.clock()
                    self._process(records)
                self._maybe_commit()
                if self._idle_exit_due():
                    log.info("no record for %.1f s after the last commit: exiting (--until-idle)",
                             self.until_idle_s)
                    break
            self._finish()
            return EXIT_OK
        finally:
            self._close()

    # ---- one poll ---------------------------------------------------------------------------
    def _poll(self) -> list[Any]:
        try:
            batch = self.consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=self.max_records)
            if batch:
                self.stats.sample("poll_records", sum(len(v) for v in batch.values()))
        except Exception as e:
            if not is_kafka_outage(e):
                raise
            self._kafka_outage(e)
            return []
        if self._kafka_failing:
            self._kafka_failing = False
            self.kafka_backoff.reset()
            log.info("kafka reachable again")
        if self._last_activity is None and self.consumer.assignment():
            self._last_activity = self.clock()  # the idle clock starts once we own partitions
        if self._slow_unchecked:
            batch = self._slow_from_earliest(batch or {})
        if not batch:
            return []
        out: list[Any] = []
        for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
            out.extend(batch[tp])
        return out

    def _process(self, records: list[Any]) -> None:
        """One poll's work with the cyclic garbage collector paused.

        A poll allocates hundreds of thousands of short-lived, acyclic objects (decoded JSON,
        records, Redis commands) that reference counting frees as soon as the poll is done;
        with the collector running, every 700 allocations it walks all of them again, which
        cost as much as the parsing itself on large messages. It is paused only until the
        poll's objects are dropped (and while waiting out an outage it runs as usual), so
        cycles made elsewhere are still collected between polls."""
        pause = gc.isenabled()
        if pause:
            gc.disable()
        self._gc_paused = pause
        try:
            self._process_poll(records)
        finally:
            self._gc_paused = False
            if pause:
                gc.enable()

    def _process_poll(self, records: list[Any]) -> None:
        t0 = self.clock()
        fl = self.processor.prepare(records)
        self.inflight = fl
        try:
            finished = self._execute_with_retry(fl)
        finally:
            self.inflight = None
        if finished:
            offsets = fl.commit_offsets()
            self.book.mark_done(offsets)
            self._runs_since_depth += len(fl.plan.runs) if fl.plan else 0
            if log.isEnabledFor(logging.DEBUG):
                plan = fl.plan
                log.debug("poll: %d records from %d partitions, %d dead letters, %d runs planned, %.1f ms",
                          len(fl.records), len(offsets), len(fl.dead),
                          len(plan.runs) if plan else 0, (self.clock() - t0) * 1000)

    def _execute_with_retry(self, fl: InFlight) -> bool:
        """Finish `fl`; on an outage pause everything, back off and retry the same work.

        Returns False when the work was abandoned (stop requested during an outage, or every
        partition of it revoked): nothing is committed and Kafka redelivers it."""
        while True:
            try:
                self.processor.execute(fl)
            except Exception as e:
                if not is_store_outage(e):
                    raise
                if not self._store_failing:
                    self._store_failing = True
                    log.warning("redis/queue unavailable (%s: %s): pausing %d partitions, nothing "
                                "committed, retrying with backoff", type(e).__name__, e,
                                len(self.consumer.assignment()))
                    self._pause("outage")
                self.stats.add("ingest", "store_retries")
                if self.stopping:
                    self._abandon(fl, "stop requested while redis/queue is unavailable")
                    return False
                self._wait_paused(self.backoff.next_delay())
                if not fl.records:
                    return False  # all of it revoked: the new owners redo it
                continue
            if self._store_failing:
                self._store_failing = False
                self.backoff.reset()
                log.info("redis/queue available again: resuming")
                self._resume("outage")
            return True

    def _wait_paused(self, seconds: float) -> None:
        """Sleep by polling with everything paused: keeps group membership alive and lets
        rebalance callbacks run. Records of newly assigned partitions are put back."""
        if self._gc_paused:
            gc.enable()
        try:
            self._poll_paused(seconds)
        finally:
            if self._gc_paused:
                gc.disable()

    def _poll_paused(self, seconds: float) -> None:
        try:
            batch = self.consumer.poll(timeout_ms=int(seconds * 1000), max_records=self.max_records)
        except Exception as e:
            if not is_kafka_outage(e):
                raise
            self.sleep(seconds)
            return
        for tp, recs in (batch or {}).items():
            if recs:
                self.consumer.seek(tp, min(r.offset for r in recs))
                self.consumer.pause(tp)

    def _abandon(self, fl: InFlight, why: str) -> None:
        """Give the poll back to Kafka: rewind owned partitions to its first offsets."""
        owned = {TP(tp.topic, tp.partition): tp for tp in self.consumer.assignment()}
        for tp, off in fl.rewind_offsets().items():
            if tp in owned:
                self.consumer.seek(owned[tp], off)
        log.warning("abandoned %d uncommitted records (%s); they will be redelivered", len(fl.records), why)

    # ---- commits ------------------------------------------------------------------------------
    def _maybe_commit(self, force: bool = False) -> None:
        if not self.book:
            return
        if not force and self.clock() - self._last_commit < self.commit_interval_s:
            return
        if self._commit(self.book.pending()):
            self.processor.flush()  # counters follow the commits, so HGETALL is never far behind

    def _on_loop_thread(self) -> bool:
        return self._loop_thread is None or threading.current_thread() is self._loop_thread

    def _commit(self, offsets: dict[TP, int]) -> bool:
        if not offsets:
            return True
        if self.before_commit is not None:
            try:
                self.before_commit()
            except StoreUnavailable as e:
                log.warning("not committing yet: %s", e)
                self.stats.add("ingest", "store_retries")
                return False
        if not self._on_loop_thread():
            return self._commit_from_listener(offsets)
        from kafka import TopicPartition
        from kafka.errors import CommitFailedError, IllegalGenerationError, RebalanceInProgressError
        from kafka.structs import OffsetAndMetadata

        payload = {TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(off, "", -1)
                   for tp, off in offsets.items()}
        t0 = time.perf_counter()
        try:
            self.consumer.commit(offsets=payload)
            self.stats.sample("commit", time.perf_counter() - t0)
        except (CommitFailedError, IllegalGenerationError, RebalanceInProgressError) as e:
            # the group is rebalancing. Partitions we keep (cooperative-sticky usually keeps
            # them all) stay pending and are committed after the rejoin; partitions that go
            # are forgotten by the revoke/lost callbacks, and their new owners redo the
            # uncommitted tail (idempotent writes make that harmless). Forgetting the kept
            # ones here would leave written work uncommitted until newer records arrive.
            log.warning("commit rejected by the group (%s); retried after the rebalance", e)
            self.stats.add("ingest", "commit_errors")
            try:
                owned = {TP(t.topic, t.partition) for t in self.consumer.assignment()}
            except Exception:  # noqa: BLE001 - no assignment known: keep nothing
                owned = set()
            self.book.forget([tp for tp in offsets if tp not in owned])
            return False
        except Exception as e:
            if not is_kafka_outage(e):
                raise
            self.stats.add("ingest", "commit_errors")
            self._kafka_outage(e)
            return False
        self.book.committed(offsets)
        self.stats.add("ingest", "commits")
        now = self.clock()
        self._last_commit = now
        self._last_activity = now
        return True

    def _commit_from_listener(self, offsets: dict[TP, int]) -> bool:
        """Commit from a rebalance callback. kafka-python 3 runs listeners on its IO thread,
        where a blocking `commit()` raises ("Cannot block on net.run() from the IO thread"),
        so the commit is sent without waiting. If it fails, the partitions' next owner
        redelivers the tail, which the idempotent writes absorb; nothing is lost either way."""
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        payload = {TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(off, "", -1)
                   for tp, off in offsets.items()}

        def done(_offsets: Any, response: Any) -> None:
            if isinstance(response, BaseException):
                log.warning("commit on revoke failed (%s); the new owners redeliver the tail", response)

        try:
            self.consumer.commit_async(offsets=payload, callback=done)
        except Exception as e:  # noqa: BLE001 - best effort, see above
            log.warning("commit on revoke not sent (%s); the new owners redeliver the tail", e)
            self.stats.add("ingest", "commit_errors")
            return False
        self.book.committed(offsets)
        self.stats.add("ingest", "commits")
        return True

    # ---- periodic work ---------------------------------------------------------------------
    def _tick(self) -> None:
        now = self.clock()
        if now - self._last_close >= self.close_interval_s:
            self._last_close = now
            self._close_orders()
        if self.gate is not None and self.queue_depth is not None and \
                (now - self._last_depth_check >= self.depth_interval_s or self._may_pass_high_water()):
            self._last_depth_check = now
            self._check_depth()
        if self.summary_interval_s and now - self._last_summary >= self.summary_interval_s:
            self._summary(now)
            self.processor.flush()

    def _close_orders(self) -> None:
        try:
            self.processor.close_expired_orders()
        except Exception as e:
            if not is_store_outage(e):
                raise
            self.stats.add("ingest", "store_retries")
            log.debug("order closer: redis unavailable (%s), retrying next tick", e)

    def _may_pass_high_water(self) -> bool:
        """True when the runs scheduled since the last read could have carried the queue past
        high water: a fast ingester must not wait for the next depth interval to notice
        (each run adds at most one job, so this reads early, never late)."""
        gate = self.gate
        return (gate is not None and not gate.paused
                and (self.last_depth or 0) + self._runs_since_depth > gate.high_water)

    def _check_depth(self) -> None:
        try:
            depth = int(self.queue_depth())  # type: ignore[misc]
        except Exception as e:
            if not is_store_outage(e):
                raise
            return
        self.last_depth = depth
        self._runs_since_depth = 0
        change = self.gate.update(depth)  # type: ignore[union-attr]
        if change is True:
            log.warning("queue depth %d above high water %d: pausing consumption",
                        depth, self.gate.high_water)  # type: ignore[union-attr]
            self.stats.add("ingest", "pauses")
            self._pause("backpressure")
        elif change is False:
            log.info("queue depth %d below low water %d: resuming consumption",
                     depth, self.gate.low_water)  # type: ignore[union-attr]
            self.stats.add("ingest", "resumes")
            self._resume("backpressure")

    def _pause(self, reason: str) -> None:
        self.pause_reasons.add(reason)
        parts = list(self.consumer.assignment())
        if parts:
            self.consumer.pause(*parts)

    def _resume(self, reason: str) -> None:
        self.pause_reasons.discard(reason)
        if not self.pause_reasons:
            parts = list(self.consumer.paused())
            if parts:
                self.consumer.resume(*parts)

    def _kafka_outage(self, e: BaseException) -> None:
        if not self._kafka_failing:
            self._kafka_failing = True
            log.warning("kafka unavailable (%s: %s): retrying with backoff", type(e).__name__, e)
        self.stats.add("ingest", "kafka_retries")
        self.sleep(self.kafka_backoff.next_delay())

    def lag(self) -> dict[TP, int]:
        """High watermark minus position per owned partition (from fetch metadata; no I/O)."""
        return consumer_lag(self.consumer)

    def _summary(self, now: float) -> None:
        elapsed = max(now - self._last_summary, 1e-9)
        msgs = self.stats.total("ingest", "messages")
        dead = self.stats.total("ingest", "dead_letters")
        rate = (msgs - self._summary_base[0]) / elapsed
        lag = self.lag()
        if self.on_lag is not None:
            self.on_lag(lag)
        behind = sorted(((n, tp) for tp, n in lag.items() if n), reverse=True)
        lag_text = f"{sum(lag.values())} over {len(lag)} partitions"
        if behind:
            lag_text += " (" + ", ".join(f"{tp.topic}[{tp.partition}]={n}" for n, tp in behind[:5]) + \
                (", ..." if len(behind) > 5 else "") + ")"
        log.info("ingest: %.1f records/s, %d dead letters (+%d), %d triggers fired, queue depth %s, "
                 "lag %s%s", rate, dead, dead - self._summary_base[1],
                 self.stats.total("ingest", "triggers_fired"),
                 "?" if self.last_depth is None else self.last_depth, lag_text,
                 f", paused ({', '.join(sorted(self.pause_reasons))})" if self.pause_reasons else "")
        self._summary_base = (msgs, dead)
        self._last_summary = now

    # ---- idle exit and shutdown ---------------------------------------------------------
    def _idle_exit_due(self) -> bool:
        if self.until_idle_s is None or self._last_activity is None or self.book or self.pause_reasons:
            return False
        if self.clock() - self._last_activity < self.until_idle_s:
            return False
        # close every order second whose deadline passed before leaving, and wait (polling on)
        # for the ones our last writes opened: none may be left open at the exit
        try:
            while self.processor.close_expired_orders():
                pass
            return bool(self.processor.orders_settled())
        except Exception as e:
            if not is_store_outage(e):
                raise
            return False

    def _finish(self) -> None:
        self._maybe_commit(force=True)
        self.processor.flush()

    def _close(self) -> None:
        try:
            self.consumer.close(autocommit=False)
        except Exception as e:  # closing is best effort: offsets are already committed
            log.debug("consumer close: %s", e)

    # ---- rebalance ----------------------------------------------------------------------
    def on_revoked(self, revoked: Iterable[Any]) -> None:
        """Finish the in-flight work if possible and commit what we release."""
        revoked = list(revoked)
        if not revoked:
            return
        fl = self.inflight
        if fl is not None and not fl.done:
            try:
                self.processor.execute(fl)
            except Exception as e:
                if not is_store_outage(e):
                    raise
                if not fl.written:
                    fl.drop_partitions(revoked)
                log.warning("partitions revoked during an outage: %d records left to their new owner",
                            sum(1 for r in fl.records if TP(r.topic, r.partition) in
                                {TP(t.topic, t.partition) for t in revoked}))
            else:
                self.book.mark_done(fl.commit_offsets())
        self._commit(self.book.pending(only=revoked))
        self.book.forget(revoked)
        if self.on_released is not None:
            self.on_released([TP(t.topic, t.partition) for t in revoked])
        log.info("partitions revoked: %s", tps_text(revoked))

    def _slow_from_earliest(self, batch: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
        """Newly assigned slow-topic partitions without a committed offset go back to the
        earliest offset; what this poll returned for them (read from where
        `auto_offset_reset` put them) is dropped, to be read again in order."""
        tps, self._slow_unchecked = list(self._slow_unchecked), set()
        reset = start_from_earliest_if_uncommitted(self.consumer, tps)
        return {tp: recs for tp, recs in batch.items() if tp not in reset}

    def on_assigned(self, assigned: Iterable[Any]) -> None:
        assigned = list(assigned)
        self._slow_unchecked.update(tp for tp in assigned if tp.topic in self.slow_topics)
        if assigned and self.pause_reasons:
            self.consumer.pause(*assigned)
        if assigned:
            log.info("partitions assigned: %s", tps_text(assigned))
