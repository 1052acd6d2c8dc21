"""Station jobs a worker took off the queue and never started: queued again.

RQ moves a job from the queue to `rq:queue:<name>:intermediate` when a worker dequeues it, and
out of there (status `started`) when the worker prepares to run it, in one transaction. A
worker that stops in between (SIGTERM or SIGKILL during a rolling deploy, caught between the
dequeue and the start) leaves the job in the intermediate list with status `queued`: it never
runs, and every later trigger of the station joins it (its status says queued), so the
station's runs wait for RQ's own clean-up, which comes with a worker's maintenance (every 10
minutes) and then only for jobs seen there for over a minute. The sweeper looks every pass:
a job still there and still `queued` `stuck_after_s` after it was first seen goes back to the
front of its queue. A worker that was merely slow to start it then runs a job whose runs are
taken already: it finds nothing to do (the take is atomic), so nothing runs twice.
"""

from __future__ import annotations

import logging
import time

import redis
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job

from workers.scheduling import station_queue

log = logging.getLogger(__name__)

#: a dequeued job is normally started within milliseconds
STUCK_AFTER_S = 5.0


def requeue_stuck(r: redis.Redis, queue: str, now_s: float | None = None,
                  stuck_after_s: float = STUCK_AFTER_S) -> list[str]:
    """Put back on `queue` the jobs stuck in its intermediate list; their ids."""
    q = station_queue(r, queue)
    iq = IntermediateQueue(q.key, r)
    ids = iq.get_job_ids()
    if not ids:
        return []
    now_s = time.time() if now_s is None else now_s
    out = []
    for jid in ids:
        iq.set_first_seen(jid)  # NX: the first sweep that sees it starts its clock
        first = iq.get_first_seen(jid)
        if first is None or now_s - first.timestamp() < stuck_after_s:
            continue
        status = r.hget(Job.key_for(jid), "status")
        if status is None:  # the job expired: nothing to run
            iq.remove(jid)
            continue
        if status != b"queued":  # started meanwhile: RQ's registries own it now
            continue
        pipe = r.pipeline(transaction=True)
        pipe.lrem(iq.key, 1, jid)
        pipe.lpush(q.key, jid)
        pipe.delete(iq.get_first_seen_key(jid))
        removed = pipe.execute()[0]
        if removed:  # another sweeper may have moved it first
            out.append(jid)
            log.warning("job %s (queue %s) was dequeued by a worker that stopped before starting it: "
                        "queued again", jid, queue)
    return out
