"""The dynamic batcher in process, with a real numpy model function: merging, size
limits, inline runs, drain on close, errors reaching every request of a batch."""
import threading

import numpy as np
import pytest

from cookline.v1 import serve_pb2
from services.serve.batcher import Batcher
from services.serve.stats import ModelStats


class GatedModel:
    """Doubles its input; each call waits until the test opens the gate, so requests
    queue up behind a running batch deterministically."""

    def __init__(self):
        self.gate = threading.Event()
        self.calls: list[int] = []
        self.entered = threading.Semaphore(0)

    def __call__(self, features):
        self.calls.append(len(features))
        self.entered.release()
        assert self.gate.wait(30)
        return features * 2


def batcher(model, max_batch_size=8, delay_ms=0):
    stats = ModelStats("m", 1, serve_pb2.BatchingConfig(max_batch_size=max_batch_size, max_queue_delay_ms=delay_ms))
    return Batcher("m-1", model, max_batch_size, delay_ms, stats), stats


def rows(n, value=1.0):
    return np.full((n, 2), value, np.float32)


def test_requests_queued_behind_a_running_batch_merge_up_to_max_batch_size():
    model = GatedModel()
    b, stats = batcher(model, max_batch_size=8)
    first = b.submit(rows(1, 0))
    assert model.entered.acquire(timeout=30)  # the worker is inside the model with batch 1
    queued = [b.submit(rows(3, i)) for i in range(1, 5)]  # 12 rows: batches of 6 (3+3) and 6
    model.gate.set()
    for i, future in enumerate(queued, start=1):
        assert np.array_equal(future.result(30), rows(3, 2 * i))
    assert first.result(30).shape == (1, 2)
    b.close()
    assert model.calls == [1, 6, 6]
    proto = stats.to_proto()
    assert dict(proto.batch_size_counts) == {1: 1, 6: 2} and dict(proto.requests_per_batch_counts) == {1: 1, 2: 2}
    assert proto.requests == 5 and proto.rows == 13 and proto.batches == 3


def test_an_oversized_request_runs_alone_and_is_not_split():
    model = GatedModel()
    model.gate.set()
    b, _ = batcher(model, max_batch_size=4)
    assert b.submit(rows(10)).result(30).shape == (10, 2)
    b.close()
    assert model.calls == [10]


def test_queue_delay_waits_for_more_requests():
    model = GatedModel()
    model.gate.set()
    b, stats = batcher(model, max_batch_size=4, delay_ms=10_000)
    futures = [b.submit(rows(1)) for _ in range(4)]  # the 4th fills the batch: no 10 s wait
    assert all(f.result(30).shape == (1, 2) for f in futures)
    b.close()
    assert model.calls == [4]


def test_inline_runs_on_the_callers_thread_only_when_idle():
    threads = []

    def model(features):
        threads.append(threading.current_thread())
        return features

    b, _ = batcher(model)
    future = b.submit(rows(1), inline=True)
    assert future.done() and threads[-1] is threading.current_thread()
    assert b.submit(rows(1)).result(30) is not None and threads[-1] is not threading.current_thread()
    b.close()


def test_close_answers_queued_requests_then_refuses_new_ones():
    model = GatedModel()
    b, _ = batcher(model)
    futures = [b.submit(rows(1)) for _ in range(3)]
    assert model.entered.acquire(timeout=30)
    closer = threading.Thread(target=b.close)
    closer.start()
    model.gate.set()
    closer.join(30)
    assert all(f.result(0).shape == (1, 2) for f in futures)
    assert b.submit(rows(1)) is None


def test_a_failing_model_call_fails_every_request_of_its_batch():
    def model(features):
        raise ValueError("boom")

    b, stats = batcher(model)
    future = b.submit(rows(1))
    with pytest.raises(ValueError, match="boom"):
        future.result(30)
    b.close()
    assert stats.to_proto().failed_requests == 1


def test_metrics_address_setting():
    from cookline import config
    assert config.serve_metrics_address({}) is None
    assert config.serve_metrics_address({"COOKLINE_SERVE_METRICS_ADDR": "0.0.0.0:9154"}) == ("0.0.0.0", 9154)
    assert config.serve_metrics_address({"COOKLINE_SERVE_METRICS_ADDR": ":9154"}) == ("127.0.0.1", 9154)
    with pytest.raises(ValueError, match="COOKLINE_SERVE_METRICS_ADDR"):
        config.serve_metrics_address({"COOKLINE_SERVE_METRICS_ADDR": "localhost"})
