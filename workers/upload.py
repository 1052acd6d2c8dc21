"""Sending claimed batches to their MODULE-OUTPUT topic (spec §3.5, §6.6).

Only the caller that won the tracker's open -> uploading move gets here. The envelope is sent
keyed by the batch id and the send is acknowledged (acks=all) before the batch is marked
uploaded. If Kafka is down the batch stays `uploading`; the sweeper re-claims it after
`reclaim_after_s` and sends again. Our code thus sends a batch twice only when an uploader
died between the broker's ack and the tracker's mark, and the duplicate carries the same key.

Background mode (`submit`, used by `stationflow worker`): the job hands its claimed batches to
one daemon thread per process and returns; the thread sends whatever has accumulated in one
go, waits for the acks and marks the batches uploaded, exactly as `upload` does. Nothing about
the batch changes: it is `uploading` from the claim, so if the process dies with batches still
queued, a sweeper re-claims them after `reclaim_after_s`, as for a job that died mid-send. A
batch that waited in the queue longer than most of `reclaim_after_s` is left to the sweeper
instead (sending it too would race the re-claim). The queue is bounded, so when Kafka is slow
the jobs slow down instead of memory growing. `flush` / `close` drain it on shutdown.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from parsers.catalogue import Catalogue
from store.tracker import Batch, BatchTracker, envelope
from workers import events
from workers.lanes import call_hook

log = logging.getLogger(__name__)

BatchHandler = Callable[[str, list[dict[str, Any]]], Any]


class UploadError(Exception):
    """A batch the broker did not acknowledge in time; it stays claimed for the sweeper."""


def make_producer(config: dict[str, Any]) -> Any:
    """A KafkaProducer from settings kwargs; idempotence is dropped when the broker (or the
    client) cannot do it, since the batch key already makes duplicates harmless."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    cfg = dict(config)
    try:
        return KafkaProducer(**cfg)
    except (KafkaError, ValueError, AssertionError) as e:
        if not cfg.get("enable_idempotence"):
            raise
        log.warning("Kafka producer without idempotence (%s)", e)
        cfg["enable_idempotence"] = False
        return KafkaProducer(**cfg)


class Uploader:
    """Thread-safe; one per process. The producer is created at the first upload."""

    def __init__(self, catalogue: Catalogue, tracker: BatchTracker, producer_config: dict[str, Any] | None = None,
                 *, producer: Any = None, send_timeout_s: float = 10.0,
                 batch_handler: BatchHandler | None = None, max_queued: int = 1000) -> None:
        self.catalogue = catalogue
        self.tracker = tracker
        self.config = dict(producer_config or {})
        self._producer = producer
        self.send_timeout_s = send_timeout_s
        self.batch_handler = batch_handler
        self._lock = threading.Lock()
        # background mode: (monotonic submit time, batches) items; None stops the thread
        self._queue: queue.Queue[tuple[float, list[Batch]] | None] = queue.Queue(maxsize=max_queued)
        self._thread: threading.Thread | None = None
        self._inflight = 0
        self._idle = threading.Condition()

    @property
    def producer(self) -> Any:
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    self._producer = make_producer(self.config)
        return self._producer

    def upload(self, batches: Sequence[Batch], now_ms: int | None = None) -> list[bool]:
        """Send every batch, wait for the acks, mark the acknowledged ones uploaded.
        Returns per batch whether it was sent and acknowledged (False: left for the sweeper)."""
        if not batches:
            return []
        ts = time.time()
        futures: list[Any] = []
        for b in batches:
            topic = self.catalogue.by_module[b.module].output_topic if b.module in self.catalogue.by_module \
                else None
            if topic is None:
                futures.append(None)
                log.error("batch %s: module %r is not in the catalogue; not uploaded", b.batch_id, b.module)
                continue
            try:
                futures.append(self.producer.send(topic, key=b.batch_id.encode(), value=envelope(b, ts)))
            except Exception as e:  # noqa: BLE001 - any client error leaves the batch for the sweeper
                log.warning("batch %s: send to %s failed: %s", b.batch_id, topic, e)
                events.count("upload_errors", module=b.module)
                futures.append(None)
        ok: list[bool] = []
        for b, fut in zip(batches, futures, strict=True):
            if fut is None:
                ok.append(False)
                continue
            try:
                fut.get(timeout=self.send_timeout_s)
                ok.append(True)
            except Exception as e:  # noqa: BLE001
                log.warning("batch %s: no acknowledgement from Kafka: %s", b.batch_id, e)
                events.count("upload_errors", module=b.module)
                ok.append(False)
        done = [b for b, good in zip(batches, ok, strict=True) if good]
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        won = self.tracker.finish([b.batch_id for b in done], now_ms)
        for b, first in zip(done, won, strict=True):
            if first:
                observe_batch(b, "uploaded", now_ms)
                if self.batch_handler is not None:
                    self._call_handler(b)
        return ok

    # ---- background mode --------------------------------------------------------------------
    def submit(self, batches: Sequence[Batch]) -> None:
        """Queue claimed batches for the upload thread (started at the first call); blocks only
        when `max_queued` submissions are already waiting."""
        if not batches:
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="stationflow-upload", daemon=True)
                self._thread.start()
        with self._idle:
            self._inflight += len(batches)
        self._queue.put((time.monotonic(), list(batches)))

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every submitted batch was sent (or given up); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout_s)

    @property
    def queued(self) -> int:
        """Batches submitted and not yet handled."""
        return self._inflight

    def _run(self) -> None:
        limit_s = 0.8 * self.tracker.reclaim_after_ms / 1000
        while True:
            item = self._queue.get()
            if item is None:
                return
            items = [item]
            while True:  # everything already waiting goes out in one send / ack round
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                items.append(nxt)
            now = time.monotonic()
            send: list[Batch] = []
            for since, batches in items:
                if now - since > limit_s:
                    for b in batches:
                        log.warning("batch %s waited %.1f s to be sent; left for the sweeper's re-claim",
                                    b.batch_id, now - since)
                        events.count("upload_errors", module=b.module)
                else:
                    send.extend(batches)
            try:
                self.upload(send)
            except Exception:  # noqa: BLE001 - the batches stay `uploading`: the sweeper re-sends them
                log.exception("upload of %d batches failed; left for the sweeper", len(send))
            finally:
                with self._idle:
                    self._inflight -= sum(len(b) for _, b in items)
                    self._idle.notify_all()

    def _call_handler(self, b: Batch) -> None:
        import orjson

        try:
            call_hook(self.batch_handler, b.batch_id, [orjson.loads(v) for _, v in b.results])  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - a hook never breaks the pipeline
            log.exception("batch_upload_handler failed for batch %s", b.batch_id)

    def close(self, timeout_s: float = 30.0) -> None:
        """Drain the background queue (at most `timeout_s`), then close the producer."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            if not self.flush(timeout_s):
                log.warning("%d batches not sent at shutdown; a sweeper re-claims them", self._inflight)
            self._queue.put(None)
            thread.join(timeout=1.0)
            self._thread = None
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None


def observe_batch(b: Batch, outcome: str, now_ms: int) -> None:
    """Per-process metrics of a finished batch (the Redis counters are the tracker's)."""
    events.count("batches", module=b.module, outcome=outcome)
    for status, fld in (("expected", "n_expected"), ("ok", "ok"), ("none", "none"), ("failed", "failed"),
                        ("timed_out", "timed_out"), ("late", "late")):
        n = b.count(fld)
        if n:
            events.count("batch_stations", n, module=b.module, status=status)
    end = b.completed_ms or now_ms
    if b.created_ms:
        events.sample("batch_seconds", max(0.0, (end - b.created_ms) / 1000), module=b.module)
