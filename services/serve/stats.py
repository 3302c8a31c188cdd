"""Serving statistics of one model version: counts, histograms and percentiles."""

from __future__ import annotations

import collections
import threading

import numpy as np

from cookline.v1 import model_pb2, serve_pb2

# Requests whose queue delay and latency the percentiles are computed over.
WINDOW = 10_000


def _percentiles(values) -> serve_pb2.Percentiles:
    if not values:
        return serve_pb2.Percentiles()
    array = np.fromiter(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(array, [50, 90, 99])
    return serve_pb2.Percentiles(p50=p50, p90=p90, p99=p99, mean=float(array.mean()))


class ModelStats:
    """Thread-safe counters of one served model version."""

    def __init__(self, name: str, version: int, batching: serve_pb2.BatchingConfig):
        self.model = model_pb2.ModelRef(name=name, version=version)
        self.batching = batching
        self.ready = False
        self._lock = threading.Lock()
        self.requests = self.failed = self.rows = self.batches = 0
        self.batch_sizes: collections.Counter = collections.Counter()
        self.requests_per_batch: collections.Counter = collections.Counter()
        self.queue_delays_ms: collections.deque = collections.deque(maxlen=WINDOW)
        self.latencies_ms: collections.deque = collections.deque(maxlen=WINDOW)

    def record_batch(self, rows: int, requests: int, queue_delays_s, failed: bool) -> None:
        with self._lock:
            self.batches += 1
            self.rows += rows
            self.requests += requests
            self.failed += requests if failed else 0
            self.batch_sizes[rows] += 1
            self.requests_per_batch[requests] += 1
            self.queue_delays_ms.extend(d * 1000 for d in queue_delays_s)

    def record_latencies(self, latencies_s) -> None:
        with self._lock:
            self.latencies_ms.extend(d * 1000 for d in latencies_s)

    def to_proto(self) -> serve_pb2.ModelStats:
        with self._lock:
            return serve_pb2.ModelStats(
                model=self.model,
                ready=self.ready,
                batching=self.batching,
                requests=self.requests,
                failed_requests=self.failed,
                rows=self.rows,
                batches=self.batches,
                batch_size_counts=dict(self.batch_sizes),
                requests_per_batch_counts=dict(self.requests_per_batch),
                queue_delay_ms=_percentiles(self.queue_delays_ms),
                latency_ms=_percentiles(self.latencies_ms),
            )
