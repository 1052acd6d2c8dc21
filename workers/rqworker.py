"""The RQ worker class of `stationflow worker`: RQ's in-process `SimpleWorker`, made to stop
promptly.

RQ 3 listens for worker commands on a pub/sub thread that polls with a 60 s read timeout, and
its teardown joins that thread without a bound (`PubSubWorkerThread.stop()`), so a worker
could take up to a minute to exit after SIGTERM (or after a burst), depending on where the
thread was in its read. Here the thread polls every `PUBSUB_POLL_S` and teardown waits for it
at most `PUBSUB_JOIN_S`: a worker leaves within a few seconds of SIGTERM whatever it was doing
between jobs. A SIGTERM that arrives while the worker is still starting (before RQ installs its
handlers) is kept and honoured once the loop starts, instead of killing the process uncleanly.

Use it with plain RQ too:
    rq worker --serializer rq.serializers.JSONSerializer --worker-class workers.rqworker.StationWorker stationflow
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from rq import SimpleWorker

log = logging.getLogger(__name__)

#: how often the pub/sub thread wakes up to see whether it must stop (RQ: 60 s)
PUBSUB_POLL_S = 0.25
#: the longest teardown waits for the pub/sub thread before closing its connection under it
PUBSUB_JOIN_S = 2.0


class StationWorker(SimpleWorker):
    """`SimpleWorker` whose pub/sub thread stops within `PUBSUB_JOIN_S` (see the module doc)."""

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        """Register, subscribe, ...; a stop signal meanwhile is deferred to the work loop."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._stop_after_bootstrap)
        super().bootstrap(*args, **kwargs)

    def _stop_after_bootstrap(self, signum: int, _frame: FrameType | None) -> None:
        # the loop checks this flag before its first dequeue, then tears down normally
        log.info("worker %s: %s during start-up: stopping once started", self.name, signal.Signals(signum).name)
        self._stop_requested = True

    def subscribe(self) -> None:
        """RQ's command channel, with a pub/sub thread that polls every `PUBSUB_POLL_S`."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]  # RQ declares it None
            sleep_time=PUBSUB_POLL_S, daemon=True, exception_handler=self._pubsub_exception_handler)

    def unsubscribe(self) -> None:
        """Stop the pub/sub thread (bounded wait) and close its connection."""
        thread, pubsub = self.pubsub_thread, self.pubsub
        if thread is None or pubsub is None:
            return
        thread.stop(timeout=PUBSUB_JOIN_S)  # the thread closes the pub/sub itself when it leaves
        if thread.is_alive():
            log.warning("worker %s: pub/sub thread still reading after %.1f s; closing its connection",
                        self.name, PUBSUB_JOIN_S)
            pubsub.close()
        self.pubsub_thread = None
