"""Everything a station job needs, built once per worker process.

RQ calls `workers.jobs.run_stations(stations)` with nothing else, so the job finds its
Redis connection, catalogue, store, tracker, algorithms and uploader here. By default they
come from `Settings.load()` (file + STATIONFLOW_* environment), so plain
`rq worker --url "$STATIONFLOW_REDIS_URL" --serializer rq.serializers.JSONSerializer --worker-class workers.rqworker.StationWorker stationflow`
works. Tests, the bench and `stationflow worker` install a context explicitly with `install`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from parsers.catalogue import Catalogue
from store.job_writes import JobWrites
from store.memo import DEFAULT_MAX_ENTRIES, HourlyMemo
from store.pending import PendingRuns
from store.tracker import DEFAULT_KEEP_S, BatchTracker
from store.windows import WindowStore
from workers.algorithms import Algorithm, load_all, resolve
from workers.scheduling import ScheduleOptions, job_timeout_s
from workers.upload import Uploader

ResultHandler = Callable[[str, Any, Any], Any]


@dataclass
class WorkerContext:
    r: redis.Redis
    catalogue: Catalogue
    prefix: str = "sf"
    outputs_keep: int = 10
    algorithms: dict[str, Algorithm] = field(default_factory=dict)
    uploader: Uploader | None = None
    result_handler: ResultHandler | None = None
    queue: str = "stationflow"
    sweep_interval_s: float = 1.0
    #: a running marker older than this belongs to a dead job: its runs are reported `lost`
    lost_after_s: float = 0.0
    #: finished batch records stay readable this long (`batch.keep_s`)
    batch_keep_s: float = DEFAULT_KEEP_S
    #: how the heartbeat schedules its runs; unset: this context's prefix and queue, defaults otherwise
    schedule_options: ScheduleOptions | None = None
    #: the Redis of the RQ queues when not `r` (queue.redis_url; `r` a Redis Cluster), for
    #: contexts built without schedule_options
    queue_r: redis.Redis | None = None
    #: completed batches go to the uploader's background thread (the job does not wait for the
    #: acks); only for processes that flush the uploader at exit (`stationflow worker` does),
    #: never in a forking RQ worker whose work horse exits after each job
    background_upload: bool = False
    store: WindowStore = field(init=False)
    tracker: BatchTracker = field(init=False)
    pending: PendingRuns = field(init=False)
    #: a job's outputs and cursor moves, queued on the write of the modules that produced them
    writes: JobWrites = field(init=False)
    #: module -> its inputs of kind `orders` (the cursors a run may move), from the catalogue
    order_inputs: dict[str, tuple[str, ...]] = field(init=False)
    #: hourly windows decoded by this process's earlier jobs (store.memo; bounded, and only
    #: ever answers for the bytes a job just read); 0 entries turns it off
    hourly_memo_entries: int = DEFAULT_MAX_ENTRIES
    hourly_memo: HourlyMemo = field(init=False)

    def __post_init__(self) -> None:
        self.store = WindowStore(self.r, self.catalogue, self.prefix, outputs_keep=self.outputs_keep)
        self.tracker = BatchTracker(self.r, self.prefix, keep_s=self.batch_keep_s)
        self.pending = PendingRuns(self.r, self.prefix)
        self.writes = self.store.writes
        self.hourly_memo = HourlyMemo(self.hourly_memo_entries)
        self.order_inputs = {
            m.name: tuple(a for a in m.inputs if self.catalogue.by_alias[a].kind == "orders")
            for m in self.catalogue.modules
        }
        if not self.algorithms:
            self.algorithms = load_all(self.catalogue)
        if self.schedule_options is None:
            self.schedule_options = ScheduleOptions(prefix=self.prefix, queue=self.queue, queue_r=self.queue_r)
        if not self.lost_after_s:  # a group job's RQ timeout is the station job's times its stations
            group = max(1, self.schedule_options.group_size)
            self.lost_after_s = float(job_timeout_s(self.catalogue)) * group + 60.0

    @classmethod
    def build(cls, r: redis.Redis, catalogue: Catalogue, *, prefix: str = "sf",
              producer_config: Mapping[str, Any] | None = None, producer: Any = None,
              algorithms: Mapping[str, Algorithm] | None = None, **kw: Any) -> WorkerContext:
        """A context with the reference (or configured) algorithms, `algorithms` overriding."""
        batch_handler = kw.pop("batch_handler", None)
        ctx = cls(r, catalogue, prefix, algorithms=load_all(catalogue, dict(algorithms or {})), **kw)
        ctx.uploader = Uploader(catalogue, ctx.tracker, dict(producer_config or {}), producer=producer,
                                batch_handler=batch_handler)
        return ctx

    @classmethod
    def from_settings(cls, settings: Any, r: redis.Redis | None = None) -> WorkerContext:
        """A context from a `Settings`-like object: its values are read here, once (the
        workers do not import the configuration loader, which lives above them)."""
        r = r if r is not None else settings.redis.connect()
        hooks = settings.hooks
        ctx = cls(
            r, settings.catalogue, settings.prefix, outputs_keep=settings.outputs_keep,
            result_handler=cast(ResultHandler, resolve(hooks.result_handler, "hooks.result_handler"))
            if hooks.result_handler else None,
            queue=settings.queue.name, sweep_interval_s=settings.batch.sweep_interval_s,
            batch_keep_s=settings.batch.keep_s,
            schedule_options=ScheduleOptions.from_settings(settings, connect=True),
        )
        handler = resolve(hooks.batch_upload_handler, "hooks.batch_upload_handler") \
            if hooks.batch_upload_handler else None
        ctx.uploader = Uploader(settings.catalogue, ctx.tracker, settings.kafka.producer_config(),
                                batch_handler=handler)
        return ctx


#: the "module:function" `current()` calls, with no arguments, for the context of a process
#: nobody installed one in (a plain `rq worker`): it builds one from the deployment's
#: configuration. Named by path, like the algorithms, because the configuration loader lives
#: above the workers in the import order.
CONTEXT_FACTORY = "stationflow.runtime:worker_context"

_CTX: WorkerContext | None = None
_LOCK = threading.Lock()


def install(ctx: WorkerContext | None) -> None:
    """Make `ctx` the process's context (None: rebuild from settings at the next job)."""
    global _CTX
    _CTX = ctx


def current() -> WorkerContext:
    global _CTX
    if _CTX is None:
        with _LOCK:
            if _CTX is None:
                factory = cast(Callable[[], WorkerContext], resolve(CONTEXT_FACTORY, "the worker context factory"))
                _CTX = factory()
    return _CTX
