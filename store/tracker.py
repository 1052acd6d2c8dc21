"""The batch tracker: one Redis hash per batch plus a due index, moved only by Lua scripts.

Why scripts: a batch is completed by whichever station reports last, and expired by whichever
sweeper looks first; both must see and change the state in one atomic step so that exactly
one caller wins the move open -> uploading and sends the envelope (spec §6.6). Every script
touches only its own batch key (Redis-Cluster safe); the due index `sf:batches:due` is kept
by the caller in the same pipeline and cleaned lazily by the sweeper.

Batch hash `sf:batch:<id>` (plain text, readable with HGETALL):
    module, state (open|uploading|uploaded|skipped), created, deadline, completed, claimed,
    finished (ms); expected (JSON list), n_expected, reported, ok, none, failed, f:<reason>,
    timed_out, late, reclaims, nonfinite, station_id_mismatch, wrapped, upload_empty;
    e:<station> = "-" until the station reports, then ok|none|failed:<reason>;
    r:<station> = the station's result (JSON text, already normalised).
Due index `sf:batches:due`: batch id scored by its deadline while open, by claim time +
reclaim_after while uploading (so a sender that died mid-send is retried by a sweeper).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from store.counters import Tally, queue_incr_many, read_groups
from store.keys import keys_for
from store.scripts import LuaScript, ScriptPipeline

OUTCOMES = ("ok", "none", "failed")
FAILURE_REASONS = ("exception", "timeout", "not_ready", "upstream_failed", "unserialisable", "lost")

#: finished batches stay readable this long, then expire
DEFAULT_KEEP_S = 3600.0
#: an uploading batch whose sender has not finished after this long may be re-sent
DEFAULT_RECLAIM_AFTER_S = 30.0
#: an open batch nobody ever swept still disappears after its deadline plus this
OPEN_GRACE_S = 86_400.0

COUNTER_GROUP = "batches"


class TrackerError(Exception):
    """A report or batch the tracker cannot accept (unknown outcome or reason): a caller bug."""


@dataclass(frozen=True, slots=True)
class NewBatch:
    batch_id: str
    module: str
    stations: tuple[str, ...]
    timeout_s: float
    upload_empty: bool = False


@dataclass(frozen=True, slots=True)
class Report:
    """One station's result for one batch; `result_json` is set for ok outcomes only."""

    batch_id: str
    station: str
    outcome: str  # ok | none | failed
    result_json: bytes | None = None
    reason: str | None = None  # failed only
    nonfinite: int = 0
    mismatch: bool = False
    wrapped: bool = False


@dataclass
class Batch:
    """A batch the caller has claimed and must upload (or has just finished)."""

    batch_id: str
    module: str
    status: str  # claimed | reclaimed
    fields: dict[str, str]
    results: list[tuple[str, bytes]]  # (station, result JSON) sorted by station

    @property
    def created_ms(self) -> int:
        return int(self.fields.get("created", 0))

    @property
    def completed_ms(self) -> int:
        return int(self.fields.get("completed", 0) or 0)

    def count(self, name: str) -> int:
        return int(self.fields.get(name, 0) or 0)


@dataclass
class ReportSummary:
    statuses: list[str] = field(default_factory=list)  # one per report, in order
    claimed: list[Batch] = field(default_factory=list)  # batches this call completed: upload them
    skipped: list[str] = field(default_factory=list)  # completed without an ok result


@dataclass
class ClaimSummary:
    claimed: list[Batch] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    timed_out: int = 0


def _text(v: Any) -> str:  # a Redis reply: bytes, or str on a decoding client
    return v.decode() if isinstance(v, bytes) else v


class BatchTracker:
    """Create, report to, claim and finish batches. All methods are safe with many callers."""

    SCRIPTS = ("tracker_create.lua", "tracker_report.lua", "tracker_claim.lua", "tracker_finish.lua")

    def __init__(self, r: redis.Redis, prefix: str = "sf", *, keep_s: float = DEFAULT_KEEP_S,
                 reclaim_after_s: float = DEFAULT_RECLAIM_AFTER_S) -> None:
        self.r = r
        self.keys = keys_for(r, prefix)
        self.keep_ms = int(keep_s * 1000)
        self.reclaim_after_ms = int(reclaim_after_s * 1000)
        self._script = {n: _script(n) for n in self.SCRIPTS}
        self.tally = Tally()

    # ---- creation (scheduling) ---------------------------------------------------------
    def queue_create(self, pipe: ScriptPipeline, batch: NewBatch, now_ms: int) -> None:
        """Queue create-if-absent of `batch` on `pipe` (the scheduler's pipeline); the reply is
        1 (created) or 0 (already there). Never creates a batch without expected stations."""
        if not batch.stations:
            raise TrackerError(f"batch {batch.batch_id}: no expected stations")
        deadline = now_ms + int(batch.timeout_s * 1000)
        expire_ms = deadline - now_ms + int(OPEN_GRACE_S * 1000)
        expected = orjson.dumps(sorted(batch.stations))
        keys = [self.keys.batch(batch.batch_id)]
        args = [batch.module, now_ms, deadline, int(batch.upload_empty), expire_ms, expected, *batch.stations]
        pipe.call(self._script["tracker_create.lua"], keys, args)
        # NX: a replay must not move an existing deadline; a finished batch re-added here is
        # dropped by the next sweep ("done")
        pipe.pipe.zadd(self.keys.batches_due_of(batch.batch_id), {batch.batch_id: deadline}, nx=True)

    def create(self, batches: Sequence[NewBatch], now_ms: int) -> list[bool]:
        """Create batches in one round trip; True where a batch was created (not replayed)."""
        pipe = ScriptPipeline(self.r)
        for b in batches:
            self.queue_create(pipe, b, now_ms)
        replies = pipe.execute()
        return [bool(int(x)) for x in replies[0::2]]

    # ---- reports (workers) -------------------------------------------------------------
    def report(self, reports: Sequence[Report], now_ms: int) -> ReportSummary:
        """Record reports in one round trip (two when one completes a batch). Batches
        completed by them are returned claimed: the caller uploads them and then calls `finish`."""
        if not reports:
            return ReportSummary()
        pipe = ScriptPipeline(self.r)
        at = self.queue_reports(pipe, reports, now_ms)
        replies = pipe.execute()
        return self.reports_done(reports, [replies[i] for i in at], now_ms)

    def queue_reports(self, pipe: ScriptPipeline, reports: Sequence[Report], now_ms: int) -> list[int]:
        """Queue `reports` on the caller's pipeline (a station job's one closing round trip);
        returns where their replies are, for `reports_done`.

        The batch counters go in the same round trip, counted as if every report were
        `recorded` (the outcome of all but the last report of a batch); `reports_done` corrects
        the few that were not, in the round trip a completed batch needs anyway."""
        counts: dict[str, int] = {}
        at = []
        script = self._script["tracker_report.lua"]
        for rep in reports:
            if rep.outcome not in OUTCOMES:
                raise TrackerError(f"batch {rep.batch_id} station {rep.station}: unknown outcome {rep.outcome!r}")
            if rep.outcome == "failed" and rep.reason not in FAILURE_REASONS:
                raise TrackerError(f"batch {rep.batch_id} station {rep.station}: unknown reason {rep.reason!r}")
            if rep.outcome == "ok" and rep.result_json is None:
                raise TrackerError(f"batch {rep.batch_id} station {rep.station}: ok without a result")
            at.append(pipe.call(script, [self.keys.batch(rep.batch_id)],
                                [rep.station, rep.outcome, rep.result_json or b"", rep.reason or "", now_ms,
                                 self.keep_ms, rep.nonfinite, int(rep.mismatch), int(rep.wrapped)]))
            label = f"stations_{_label(rep)}"
            counts[label] = counts.get(label, 0) + 1
        if reports:
            counts["report_recorded"] = len(reports)
        queue_incr_many(pipe, self.keys.counters(COUNTER_GROUP), counts)
        return at

    def reports_done(self, reports: Sequence[Report], replies: Sequence[Any], now_ms: int) -> ReportSummary:
        """The outcome of reports queued with `queue_reports` (`replies`: their script replies,
        in order). Moves the due index of the batches they completed and corrects the counters,
        in one more round trip only when there is something to move or correct."""
        out = ReportSummary()
        post = self.r.pipeline(transaction=False)
        for rep, reply in zip(reports, replies, strict=True):
            status = _text(reply[0])
            out.statuses.append(status)
            if status != "recorded":
                self.tally.add(COUNTER_GROUP, "report_recorded", -1)
                self.tally.add(COUNTER_GROUP, f"report_{status}")
                if status not in ("claimed", "skipped"):  # late, duplicate, not_expected, unknown
                    self.tally.add(COUNTER_GROUP, f"stations_{_label(rep)}", -1)
            if status == "claimed":
                b = _batch(rep.batch_id, "claimed", reply[1:])
                out.claimed.append(b)
                post.zadd(self.keys.batches_due_of(rep.batch_id), {rep.batch_id: now_ms + self.reclaim_after_ms}, xx=True)
            elif status == "skipped":
                out.skipped.append(rep.batch_id)
                post.zrem(self.keys.batches_due_of(rep.batch_id), rep.batch_id)
                self.tally.add(COUNTER_GROUP, "skipped")
        if len(post) or self.tally:
            self._flush(post)
        return out

    # ---- expiry (sweepers) -------------------------------------------------------------
    def claim_due(self, now_ms: int, limit: int = 100) -> ClaimSummary:
        """Claim expired open batches (uploaded partial) and stale uploading ones (re-sent)."""
        out = ClaimSummary()
        pipe0 = self.r.pipeline(transaction=False)
        for key in self.keys.batches_due_all():  # every bucket in one round trip; `limit` in all
            pipe0.zrangebyscore(key, "-inf", now_ms, start=0, num=limit)
        ids = [_text(x) for page in pipe0.execute() for x in page][:limit]
        if not ids:
            return out
        pipe = ScriptPipeline(self.r)
        for bid in ids:
            pipe.call(self._script["tracker_claim.lua"], [self.keys.batch(bid)],
                      [now_ms, self.reclaim_after_ms, self.keep_ms])
        replies = pipe.execute()
        post = self.r.pipeline(transaction=False)
        for bid, reply in zip(ids, replies, strict=True):
            status = _text(reply[0])
            if status in ("claimed", "reclaimed"):
                b = _batch(bid, status, reply[1:])
                out.claimed.append(b)
                post.zadd(self.keys.batches_due_of(bid), {bid: now_ms + self.reclaim_after_ms}, xx=True)
                if status == "claimed":
                    self.tally.add(COUNTER_GROUP, "expired")
                    t = b.count("timed_out")
                    out.timed_out += t
                    self.tally.add(COUNTER_GROUP, "stations_timed_out", t)
                else:
                    self.tally.add(COUNTER_GROUP, "reclaimed")
            elif status == "skipped":
                out.skipped.append(bid)
                t = int(reply[1])
                out.timed_out += t
                self.tally.add(COUNTER_GROUP, "expired")
                self.tally.add(COUNTER_GROUP, "skipped")
                self.tally.add(COUNTER_GROUP, "stations_timed_out", t)
                post.zrem(self.keys.batches_due_of(bid), bid)
            elif status in ("notdue", "busy"):
                post.zadd(self.keys.batches_due_of(bid), {bid: int(reply[1])}, xx=True)
            else:  # done, gone
                post.zrem(self.keys.batches_due_of(bid), bid)
        self._flush(post)
        return out

    # ---- finishing (uploaders) ---------------------------------------------------------
    def finish(self, batch_ids: Iterable[str], now_ms: int, state: str = "uploaded") -> list[bool]:
        """Move claimed batches to `state`; True where this call made the move (count once)."""
        if state not in ("uploaded", "skipped"):
            raise TrackerError(f"cannot finish a batch as {state!r}")
        ids = list(batch_ids)
        if not ids:
            return []
        pipe = ScriptPipeline(self.r)
        for bid in ids:
            pipe.call(self._script["tracker_finish.lua"], [self.keys.batch(bid)], [state, now_ms, self.keep_ms])
            pipe.pipe.zrem(self.keys.batches_due_of(bid), bid)
        replies = pipe.execute()
        won = [bool(int(x)) for x in replies[0::2]]
        self.tally.add(COUNTER_GROUP, state, sum(won))
        self.flush_counters()
        return won

    # ---- reading -----------------------------------------------------------------------
    def get(self, batch_id: str) -> dict[str, str]:
        """The batch hash as text (empty when unknown or expired), for tests and `inspect`."""
        return {_text(k): _text(v) for k, v in self.r.hgetall(self.keys.batch(batch_id)).items()}

    def counters(self) -> dict[str, int]:
        return read_groups(self.r, self.keys, [COUNTER_GROUP]).get(COUNTER_GROUP, {})

    def due_count(self) -> int:
        pipe = self.r.pipeline(transaction=False)
        for key in self.keys.batches_due_all():
            pipe.zcard(key)
        return sum(int(n) for n in pipe.execute())

    # ---- counters ----------------------------------------------------------------------
    def count_created(self, created: int, expected: int) -> None:
        self.tally.add(COUNTER_GROUP, "created", created)
        self.tally.add(COUNTER_GROUP, "stations_expected", expected)

    def _flush(self, pipe: Any) -> None:
        for (name, fld), n in self.tally.drain().items():
            pipe.hincrby(self.keys.counters(name), fld, n)
        if len(pipe):
            pipe.execute()

    def flush_counters(self) -> None:
        self._flush(self.r.pipeline(transaction=False))


def _label(rep: Report) -> str:
    return rep.outcome if rep.outcome != "failed" else f"failed:{rep.reason}"


def _script(name: str) -> LuaScript:
    s = _SCRIPTS.get(name)
    if s is None:
        s = _SCRIPTS[name] = LuaScript.from_file(name)
    return s


_SCRIPTS: dict[str, LuaScript] = {}


def _batch(batch_id: str, status: str, flat: Sequence[bytes | str]) -> Batch:
    fields: dict[str, str] = {}
    results: list[tuple[str, bytes]] = []
    for i in range(0, len(flat), 2):
        k = _text(flat[i])
        v = flat[i + 1]
        if k.startswith("r:"):
            results.append((k[2:], v if isinstance(v, bytes) else v.encode()))
        elif not k.startswith("e:"):
            fields[k] = _text(v)
    results.sort(key=lambda kv: kv[0])
    return Batch(batch_id, fields.get("module", ""), status, fields, results)


# ---- results (spec §6.6 "Results") ----------------------------------------------------------


class UnserialisableResult(TypeError):
    """An algorithm returned something that is not plain JSON (reported as `unserialisable`)."""


@dataclass(frozen=True, slots=True)
class Normalised:
    value: dict[str, Any]
    json: bytes
    nonfinite: int = 0
    mismatch: bool = False
    wrapped: bool = False


def normalise_result(station: str, result: Any) -> Normalised:
    """The result as uploaded and stored: an object whose `station_id` is the station's
    (overriding the algorithm's; a mismatch is reported), a non-object wrapped as
    {"station_id", "value"}, non-finite floats replaced by null (counted), strict JSON.

    Raises `UnserialisableResult` for values JSON cannot carry (sets, objects, non-string
    keys, integers beyond 64 bits ...)."""
    mismatch = wrapped = False
    if isinstance(result, dict):
        if "station_id" in result and result["station_id"] != station:
            mismatch = True
        value = {"station_id": station, **{k: v for k, v in result.items() if k != "station_id"}}
    else:
        wrapped = True
        value = {"station_id": station, "value": result}
    try:
        data = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as e:
        raise UnserialisableResult(f"station {station}: result is not JSON-serialisable: {e}") from e
    nonfinite = 0
    if b"null" in data:  # orjson writes NaN/Infinity as null; count them (rare path)
        nonfinite = _count_nonfinite(value)
        if nonfinite:
            value = _replace_nonfinite(value)
    return Normalised(value, data, nonfinite, mismatch, wrapped)


def _count_nonfinite(v: Any) -> int:
    if isinstance(v, float):
        return 0 if math.isfinite(v) else 1
    if isinstance(v, dict):
        return sum(_count_nonfinite(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return sum(_count_nonfinite(x) for x in v)
    return 0


def _replace_nonfinite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _replace_nonfinite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_replace_nonfinite(x) for x in v]
    return v


def envelope(batch: Batch, timestamp_s: float) -> bytes:
    """The module-output envelope (spec §3.5), assembled from the stored JSON of each result
    without decoding it again."""
    head = orjson.dumps({"batch_id": batch.batch_id, "module": batch.module, "timestamp": timestamp_s,
                         "stations_count": len(batch.results)})
    body = b",".join(v for _, v in batch.results)
    return head[:-1] + b',"results":[' + body + b"]}"
