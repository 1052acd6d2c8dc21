"""The work of one poll, independent of Kafka: parse → write windows and dead letters →
plan runs → schedule them → count.

The work is split into stages that remember their outcome, so when Redis or the queue fails
half-way the retry resumes at the failed stage with the same parsed records (and the same
ingest timestamps for records that had none): re-applying is a no-op for the store's
offset high-water marks, and scheduling is create-if-absent by batch and job id.
Nothing here commits offsets; the loop does that once `execute` returned.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest.offsets import TP, first_offsets, next_offsets
from ingest.stats import IngestStats
from ingest.triggers import Plan, plan_runs
from parsers.batches import PlannedRun
from parsers.catalogue import Catalogue
from parsers.envelopes import INTERNAL_ERROR, parse_message
from parsers.records import ParseError, Record, Source
from store.dlq import DeadLetter

log = logging.getLogger(__name__)

#: schedule(runs) or, with replay marks, schedule(runs, marks) (store.marks.MarkPlan)
ScheduleFn = Callable[..., Any]


@dataclass
class InFlight:
    """One poll's records and how far their processing got."""

    records: list[Any]
    messages: list[tuple[Source, list[Record]]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    written: bool = False
    applied: Any = None  # the store's ApplyResult
    plan: Plan | None = None
    resumed: list[PlannedRun] = field(default_factory=list)  # held runs of replayed messages
    marks: Any = None  # the replay marks scheduling records (store.marks.MarkPlan)
    replayed: int = 0  # triggers dropped: scheduled already by an earlier delivery
    scheduled: bool = False
    coalesced: Any = None  # the scheduler's result (absorbed, rate_limited, deferred per module)
    counted: bool = False

    @property
    def done(self) -> bool:
        return self.counted

    def commit_offsets(self) -> dict[TP, int]:
        return next_offsets(self.records)

    def rewind_offsets(self) -> dict[TP, int]:
        return first_offsets(self.records)

    def drop_partitions(self, partitions: Collection[Any]) -> None:
        """Forget records of revoked partitions before anything was written; their new
        owner redelivers them (used only while the write has not happened yet)."""
        lost = {TP(tp.topic, tp.partition) for tp in partitions}
        keep_src = {(r.topic, r.partition, r.offset) for r in self.records
                    if TP(r.topic, r.partition) not in lost}
        self.records = [r for r in self.records if TP(r.topic, r.partition) not in lost]
        self.messages = [(s, recs) for s, recs in self.messages if (s.topic, s.partition, s.offset) in keep_src]
        self.dead = [d for d in self.dead if (d.topic, d.partition, d.offset) in keep_src]


class Processor:
    """Turns polled records into window writes, dead letters and scheduled runs."""

    def __init__(
        self,
        catalogue: Catalogue,
        store: Any,  # store.windows.WindowStore (apply, present, stations, close_expired_orders, orders_due_count)
        dead_letters: Any,  # store.dlq.DeadLetters (add)
        schedule: ScheduleFn,
        stats: IngestStats,
        *,
        flush_counters: Callable[[dict[tuple[str, str], int]], None] | None = None,
        max_depth: int = 32,
        modules: Collection[str] | None = None,
        marks: Any = None,  # store.marks.ScheduleMarks (filter); None: no replay marks
        clock: Callable[[], float] = time.time,
        after_write: Callable[[int], None] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.store = store
        self.dead_letters = dead_letters
        self.schedule = schedule
        self.stats = stats
        self.flush_counters = flush_counters
        self.max_depth = max_depth
        self.modules = None if modules is None else frozenset(modules)
        self.marks = marks
        self.clock = clock
        #: called with the number of window writes so far after each one, before its commit
        #: (the fault tests crash the process there)
        self.after_write = after_write
        self._writes = 0
        self._pending_triggers: list[Any] = []  # from the order closer, not yet scheduled
        self._pending_plan: Plan | None = None
        self._pending_marks: Any = None
        self._decisions: dict[Any, Any] = {}  # readiness decisions, shared by every poll
        closes = [t.order_close_s for t in catalogue.topics if t.kind == "orders"]
        self._close_ms = int(max(closes) * 1000) if closes else None
        self._orders_until_ms: int | None = None  # the latest deadline a write of ours may have set

    # ---- per poll -----------------------------------------------------------------------
    def prepare(self, records: Sequence[Any]) -> InFlight:
        """Parse every record (pure; never raises for bad input)."""
        now_ms = int(self.clock() * 1000)
        fl = InFlight(list(records))
        messages, dead = fl.messages, fl.dead
        specs = self.catalogue.by_topic
        max_depth = self.max_depth
        # per-topic tallies, turned into counter keys once per poll (not per record)
        n_msgs: dict[str, int] = {}
        n_recs: dict[str, int] = {}
        n_stamped: dict[str, int] = {}
        for r in fl.records:
            topic = r.topic
            n_msgs[topic] = n_msgs.get(topic, 0) + 1
            ts = r.timestamp
            if ts is None or ts < 0:
                ts = now_ms
                n_stamped[topic] = n_stamped.get(topic, 0) + 1
            src = Source(topic, r.partition, r.offset, ts)
            spec = specs.get(topic)
            if spec is None:  # subscribed by pattern or renamed under us: not ours to parse
                dead.append(self._dead(src, "bad_envelope", f"{topic}: topic not in the catalogue", None, r.value))
                continue
            try:
                result = parse_message(spec, r.value, max_depth=max_depth)
            except ParseError as e:
                if e.reason == INTERNAL_ERROR:  # a parser bug: dead-lettered and counted, but loud
                    log.error("parser bug on topic %s partition %d offset %d (dead-lettered as %s): %s",
                              topic, r.partition, r.offset, INTERNAL_ERROR, e.detail, exc_info=e.__cause__)
                dead.append(self._dead(src, e.reason, e.detail, e.element_index, r.value))
                continue
            if result.rejections:
                for rej in result.rejections:
                    dead.append(self._dead(src, rej.reason, rej.detail, rej.element_index, rej.raw))
            recs = result.records
            if recs:
                messages.append((src, recs))
                n_recs[topic] = n_recs.get(topic, 0) + len(recs)
        n_dead: dict[str, int] = {}
        counts: dict[tuple[str, str], int] = {}
        for d in dead:  # the dead-letter store keeps its own (topic, reason) counter in Redis
            n_dead[d.topic] = n_dead.get(d.topic, 0) + 1
            key = (f"topic:{d.topic}", f"dead:{d.reason}")
            counts[key] = counts.get(key, 0) + 1
        for fld, per_topic in (("messages", n_msgs), ("stamped", n_stamped), ("records", n_recs),
                               ("dead_letters", n_dead)):
            if per_topic:
                counts[("ingest", fld)] = sum(per_topic.values())
                for topic, n in per_topic.items():
                    counts[(f"topic:{topic}", fld)] = n
        fl.counts = counts
        return fl

    def execute(self, fl: InFlight) -> None:
        """Run the remaining stages; a store or queue outage propagates (retry later)."""
        if not fl.written:
            now_ms = int(self.clock() * 1000)
            t0 = time.perf_counter()
            fl.applied = self.store.apply(fl.messages, now_ms) if fl.messages else None
            if fl.messages and self._close_ms is not None:
                self._orders_until_ms = now_ms + self._close_ms
            if fl.dead:
                self.dead_letters.add(fl.dead)
            self.stats.sample("write", time.perf_counter() - t0)
            fl.written = True
            self._after_write()
        if fl.plan is None:
            triggers = fl.applied.triggers if fl.applied is not None else []
            if self.marks is not None and triggers:
                f = self.marks.filter(triggers)
                triggers, fl.resumed, fl.marks, fl.replayed = f.fresh, f.resumed, f.marks, f.replayed
            fl.plan = self._plan(triggers)
        if not fl.scheduled:
            # the replay marks move with the runs, in the scheduler's per-station step
            t0 = time.perf_counter()
            fl.coalesced = self._schedule(fl.resumed + fl.plan.runs, fl.marks)
            if fl.coalesced is not None:
                self.stats.sample("schedule", time.perf_counter() - t0)
            fl.scheduled = True
        if not fl.counted:
            fl.counted = True
            self.stats.add_many(fl.counts)
            self._count_apply(fl.applied)
            self._count_plan(fl.plan, fl.coalesced, fl.resumed)
            if fl.replayed:
                self.stats.add("ingest", "triggers_replayed", fl.replayed)
            self.stats.add("ingest", "polls")

    # ---- order seconds closed by the clock ----------------------------------------------
    def close_expired_orders(self, limit: int = 1000) -> int:
        """Close order seconds whose deadline passed and schedule their triggers.

        Safe with many ingesters (the store closes each second exactly once). If scheduling
        fails the triggers are kept and retried on the next call, so no closed second loses
        its trigger while this process lives.
        """
        if self._pending_plan is None:
            if not self._pending_triggers:
                now_ms = int(self.clock() * 1000)
                self._pending_triggers = list(self.store.close_expired_orders(now_ms, limit=limit))
                if not self._pending_triggers:
                    return 0
            if self.marks is not None:  # a timer close is never a replay; its mark still moves
                self._pending_marks = self.marks.filter(self._pending_triggers, gate=False).marks
            self._pending_plan = self._plan(self._pending_triggers)
        plan = self._pending_plan
        coalesced = self._schedule(plan.runs, self._pending_marks)
        self._pending_marks = None
        n = len(self._pending_triggers)
        self.stats.add("ingest", "orders_closed_by_timer", n)
        self._count_plan(plan, coalesced)
        self._pending_triggers = []
        self._pending_plan = None
        return n

    def orders_settled(self) -> bool:
        """True when no order second that this ingester's writes may have opened is still open.

        Call after close_expired_orders() returned 0 (every second whose deadline passed is
        closed). Seconds opened by the last writes close order_close_s after them, so an idle
        exit waits at most that long; seconds of other ingesters due later are theirs to close.
        """
        if self._orders_until_ms is None:
            return True
        return self.store.orders_due_count(self._orders_until_ms) == 0

    # ---- helpers ------------------------------------------------------------------------
    def _schedule(self, runs: Sequence[PlannedRun], marks: Any) -> Any:
        """The scheduler's result; None when there was nothing to schedule or record."""
        if marks is not None:
            return self.schedule(runs, marks) if runs or marks else None
        return self.schedule(runs) if runs else None

    def _plan(self, triggers: Sequence[Any]) -> Plan:
        return plan_runs(triggers, self.catalogue, self.store.present, self.store.stations,
                         modules=self.modules, cache=self._decisions)

    def _count_plan(self, plan: Plan, scheduled: Any = None, resumed: Sequence[PlannedRun] = ()) -> None:
        """fired = runs that really went to the queue (deferred: those of them the rate limit
        deferred); absorbed = triggers folded into a run of an earlier message of this poll or
        into a run already pending in Redis; rate_limited = triggers folded into a run the rate
        limit deferred. `scheduled`: the scheduler's result (its per-module Counters). A
        planned run the scheduler found scheduled already (its message is at or below the
        replay mark: a concurrent delivery) counts as a replayed trigger, not fired."""
        st = self.stats
        fired, absorbed = Counter(plan.fired), Counter(plan.absorbed)
        limited = Counter(getattr(scheduled, "rate_limited", None) or {})
        deferred = Counter(getattr(scheduled, "deferred", None) or {})
        for module, n in (getattr(scheduled, "absorbed", None) or {}).items():
            fired[module] -= n
            absorbed[module] += n
        for module, n in limited.items():
            fired[module] -= n
        held = set(resumed)
        again = [run for run in getattr(scheduled, "scheduled_before", None) or () if run not in held]
        for run in again:
            fired[run.module] -= 1
        if again:
            st.add("ingest", "triggers_replayed", len(again))
        for outcome, ctr in (("fired", fired), ("absorbed", absorbed), ("rate_limited", limited),
                             ("deferred", deferred), ("not_ready", plan.not_ready)):
            for module, n in ctr.items():
                st.add("triggers", f"{module}:{outcome}", n)
                st.add("ingest", f"triggers_{outcome}", n)
        st.add("ingest", "runs_planned", len(plan.runs))

    def _count_apply(self, applied: Any) -> None:
        if applied is None:
            return
        for name in ("replays_skipped", "hours_ignored", "late_orders", "seconds_evicted"):
            n = getattr(applied, name, 0)
            if n:  # per-topic splits are counted by the store itself
                self.stats.add("ingest", name, int(n))
        stale = getattr(applied, "stale_on_arrival", None) or {}
        if stale:
            self.stats.add("ingest", "stale_on_arrival", sum(stale.values()))
            for topic, n in stale.items():  # the store wrote the per-topic counter
                self.stats.notify(f"topic:{topic}", "stale_on_arrival", n)

    def _dead(self, src: Source, reason: str, detail: str, element_index: int | None,
              raw: bytes | str | None) -> DeadLetter:
        """The entry keeps the full raw bytes: the store truncates them and records the length."""
        if raw is None:
            raw = b""
        elif isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogatepass")
        return DeadLetter(src.topic, src.partition, src.offset, src.timestamp_ms, reason, detail[:500],
                          raw, element_index)

    def _after_write(self) -> None:
        self._writes += 1
        if self.after_write is not None:
            self.after_write(self._writes)

    def flush(self) -> bool:
        """Write the unsent counters (ours and the store's); False (and kept) when Redis is out."""
        counts = self.stats.take_unsent() if self.flush_counters is not None else {}
        try:
            if counts:
                self.flush_counters(counts)  # type: ignore[misc]
                counts = {}
            store_flush = getattr(self.store, "flush_counters", None)
            if store_flush is not None:
                store_flush()
        except Exception as e:
            from ingest.retry import is_store_outage

            if not is_store_outage(e):
                raise
            if counts:
                self.stats.restore_unsent(counts)
            return False
        return True
