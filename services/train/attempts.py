"""One Train call per run at a time in this train process.

A gateway asks again for a run whose call it lost: it restarted and resumed the run, or the call
broke and it retried the stage. The earlier call may still be here, fitting or publishing (a
call's cancellation reaches the servicer between steps, and a publish in progress finishes). Were
both to go on, the run would publish two model versions: the chaos soak saw the retried call,
resumed from the earlier call's checkpoints, publish first, and the earlier one publish after it.
So the newer call cancels the earlier one and waits until it has ended; only then does it look for
a version the run published (TrainServicer._published_by_run) and train if there is none."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import grpc

from services.common.errors import Fail

log = logging.getLogger("cookline.train")

# How often a waiting call checks whether it was cancelled itself.
_POLL_S = 0.5


class RunAttempts:
    """The Train calls in flight here, by run id: each one's cancel event and its ended event."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, tuple[threading.Event, threading.Event]] = {}

    @contextlib.contextmanager
    def sole(self, run_id: str, cancelled: threading.Event) -> Iterator[None]:
        """Holds the run for one call (`cancelled`: set when that call is cancelled): an earlier call
        of the same run is cancelled and waited for first. CANCELLED if this call is cancelled while
        it waits. A call without a run id (a direct Train) is never held."""
        if not run_id:
            yield
            return
        ended = threading.Event()
        while True:
            with self._lock:
                earlier = self._calls.get(run_id)
                if earlier is None:
                    self._calls[run_id] = (cancelled, ended)
                    break
            earlier_cancelled, earlier_ended = earlier
            if not earlier_cancelled.is_set():
                log.info("run %s: asked again; cancelling the earlier call and waiting for it to end", run_id)
                earlier_cancelled.set()
            while not earlier_ended.wait(_POLL_S):
                if cancelled.is_set():
                    raise Fail(grpc.StatusCode.CANCELLED, "training cancelled")
        try:
            yield
        finally:
            with self._lock:
                if self._calls.get(run_id, (None, None))[1] is ended:
                    del self._calls[run_id]
            ended.set()
