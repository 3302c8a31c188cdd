"""Dynamic batching: one worker thread per model version merges queued requests
(unary calls and stream messages alike) into one model call.

A batch is formed from whatever is queued when the worker becomes free, up to
max_batch_size rows; with max_queue_delay_ms > 0 the worker also waits that long
after the oldest request for more to arrive. A request larger than
max_batch_size runs alone (never split). The model runs one batch at a time.

With max_queue_delay_ms = 0, a unary call that finds the model idle and nothing
queued runs its batch of one on its own thread (`inline`), skipping two thread
hand-offs: under light load that is the latency, and under load the model is
busy, so requests queue and merge as before. close() stops taking requests, answers
everything already queued, then ends the worker: that is how a hot swap retires
the old version without failing a request.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from typing import Callable

import numpy as np

from services.serve.stats import ModelStats

log = logging.getLogger("cookline.serve.batcher")


class _Request:
    __slots__ = ("features", "future", "enqueued")

    def __init__(self, features: np.ndarray):
        self.features = features
        self.future: Future = Future()
        self.enqueued = time.perf_counter()


class Batcher:
    """Merges requests for one model version; `predict(features) -> scores` runs the model."""

    def __init__(self, label: str, predict: Callable[[np.ndarray], np.ndarray], max_batch_size: int,
                 max_queue_delay_ms: int, stats: ModelStats):
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_queue_delay_ms / 1000.0
        self.stats = stats
        self._queue: collections.deque[_Request] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._busy = False  # a batch is running (on the worker or inline on a caller's thread)
        self._worker = threading.Thread(target=self._run, name=f"batcher-{label}", daemon=True)
        self._worker.start()

    def submit(self, features: np.ndarray, inline: bool = False) -> Future | None:
        """Queues rows; the future resolves to their scores. None once the batcher is closed.

        inline: the caller will wait for the result anyway, so when the model is
        idle it may run the batch itself (the future is then already resolved).
        """
        request = _Request(features)
        with self._cond:
            if self._closed:
                return None
            if inline and not self._busy and not self._queue and self.max_delay_s == 0:
                self._busy = True
            else:
                self._queue.append(request)
                self._cond.notify()
                return request.future
        try:
            self._execute([request])
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify()  # requests that queued meanwhile go to the worker
        return request.future

    def close(self, wait: bool = True) -> None:
        """Takes no new requests, answers the queued ones, stops the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if wait:
            self._worker.join()

    def _take_batch(self) -> list[_Request] | None:
        """Blocks for the next batch; None when closed and drained."""
        with self._cond:
            while not self._queue or self._busy:
                if self._closed and not self._queue:
                    return None
                self._cond.wait()
            if self.max_delay_s > 0:
                deadline = self._queue[0].enqueued + self.max_delay_s
                while not self._closed and self._queued_rows() < self.max_batch_size:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            batch = [self._queue.popleft()]
            rows = len(batch[0].features)
            while self._queue and rows + len(self._queue[0].features) <= self.max_batch_size:
                request = self._queue.popleft()
                rows += len(request.features)
                batch.append(request)
            self._busy = True
            return batch

    def _queued_rows(self) -> int:
        return sum(len(r.features) for r in self._queue)

    def _run(self) -> None:
        while (batch := self._take_batch()) is not None:
            try:
                self._execute(batch)
            finally:
                with self._cond:
                    self._busy = False

    def _execute(self, batch: list[_Request]) -> None:
        """Runs one model call for the batch and resolves every request's future."""
        started = time.perf_counter()
        delays = [started - r.enqueued for r in batch]
        features = batch[0].features if len(batch) == 1 else np.concatenate([r.features for r in batch])
        try:
            scores = self.predict(features)
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
            log.exception("model call failed for a batch of %d rows", len(features))
            self.stats.record_batch(len(features), len(batch), delays, failed=True)
            for request in batch:
                request.future.set_exception(exc)
            return
        self.stats.record_batch(len(features), len(batch), delays, failed=False)
        start = 0
        for request in batch:
            end = start + len(request.features)
            request.future.set_result(scores[start:end])
            start = end
        done = time.perf_counter()
        self.stats.record_latencies([done - r.enqueued for r in batch])
