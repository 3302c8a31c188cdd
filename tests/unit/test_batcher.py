"""The dynamic batcher in process, on a real event loop, with a real numpy model
function: merging, size limits, inline runs, where the model runs, drain on close,
errors reaching every request of a batch."""

import asyncio
import threading

import numpy as np
import pytest

from cookline.v1 import serve_pb2
from services.serve.batcher import Batcher
from services.serve.stats import ModelStats


class GatedModel:
    """Doubles its input; each call waits until the test opens the gate, so requests
    queue up behind a running batch deterministically. It blocks, so batchers using
    it run it on the model's thread (inline_max_ms=0)."""

    def __init__(self):
        self.gate = threading.Event()
        self.calls: list[int] = []
        self.entered = threading.Semaphore(0)

    def __call__(self, inputs):
        features = inputs["x"]
        self.calls.append(len(features))
        self.entered.release()
        assert self.gate.wait(30)
        return features * 2


def batcher(model, max_batch_size=8, delay_ms=0, inline_max_ms=0.0):
    stats = ModelStats("m", 1, serve_pb2.BatchingConfig(max_batch_size=max_batch_size, max_queue_delay_ms=delay_ms))
    b = Batcher("m-1", model, max_batch_size, delay_ms, stats, asyncio.get_running_loop(), inline_max_ms)
    return b, stats


def rows(n, value=1.0):
    return {"x": np.full((n, 2), value, np.float32)}


async def close(b: Batcher) -> None:
    """close() waits for the drain, which needs the loop: wait on a thread."""
    await asyncio.to_thread(b.close)


async def entered(model: GatedModel) -> None:
    assert await asyncio.to_thread(model.entered.acquire, timeout=30)


def test_requests_submitted_in_one_turn_of_the_loop_merge_into_one_call():
    async def main():
        calls = []

        def model(inputs):
            features = inputs["x"]
            calls.append(len(features))
            return features * 2

        b, stats = batcher(model, max_batch_size=8, inline_max_ms=1000.0)
        futures = [b.submit(rows(1, i)) for i in range(3)]  # three concurrent calls' requests
        results = await asyncio.gather(*futures)
        assert calls == [3] and [float(r[0, 0]) for r in results] == [0.0, 2.0, 4.0]
        await close(b)

    asyncio.run(main())


def test_requests_queued_behind_a_running_batch_merge_up_to_max_batch_size():
    async def main():
        model = GatedModel()
        b, stats = batcher(model, max_batch_size=8)
        first = b.submit(rows(1, 0))
        await entered(model)  # the model's thread is inside the model with batch 1
        queued = [b.submit(rows(3, i)) for i in range(1, 5)]  # 12 rows: batches of 6 (3+3) and 6
        model.gate.set()
        for i, future in enumerate(queued, start=1):
            assert np.array_equal(await asyncio.wait_for(future, 30), rows(3, 2 * i)["x"])
        assert (await first).shape == (1, 2)
        await close(b)
        assert model.calls == [1, 6, 6]
        proto = stats.to_proto()
        assert dict(proto.batch_size_counts) == {1: 1, 6: 2} and dict(proto.requests_per_batch_counts) == {1: 1, 2: 2}
        assert proto.requests == 5 and proto.rows == 13 and proto.batches == 3

    asyncio.run(main())


def test_an_oversized_request_runs_alone_and_is_not_split():
    async def main():
        model = GatedModel()
        model.gate.set()
        b, _ = batcher(model, max_batch_size=4)
        assert (await asyncio.wait_for(b.submit(rows(10)), 30)).shape == (10, 2)
        await close(b)
        assert model.calls == [10]

    asyncio.run(main())


def test_queue_delay_waits_for_more_requests():
    async def main():
        model = GatedModel()
        model.gate.set()
        b, stats = batcher(model, max_batch_size=4, delay_ms=10_000)
        futures = [b.submit(rows(1)) for _ in range(4)]  # the 4th fills the batch: no 10 s wait
        assert all(r.shape == (1, 2) for r in await asyncio.wait_for(asyncio.gather(*futures), 30))
        await close(b)
        assert model.calls == [4]

    asyncio.run(main())


def test_a_quick_models_batches_run_on_the_loop_once_timed_a_slow_models_on_its_thread():
    async def main():
        threads = []

        def model(inputs):
            features = inputs["x"]
            threads.append(threading.current_thread())
            return features

        loop_thread = threading.current_thread()
        quick, _ = batcher(model, max_batch_size=8, inline_max_ms=1000.0)  # every timed call counts as quick
        future = quick.submit(rows(1))
        assert not future.done()  # queued even though the model is idle
        assert (await future) is not None and threads[-1] is not loop_thread  # untimed: the model's thread
        assert (await quick.submit(rows(1))) is not None and threads[-1] is loop_thread  # a lone row: on the loop
        assert (await quick.submit(rows(8))) is not None and threads[-1] is loop_thread  # a full batch too
        await close(quick)

        slow, _ = batcher(model, max_batch_size=8, inline_max_ms=0.0)  # every call counts as slow
        for n in (1, 8, 1):
            assert (await slow.submit(rows(n))) is not None and threads[-1] is not loop_thread
        await close(slow)

    asyncio.run(main())


def test_a_model_that_turns_slow_moves_off_the_loop():
    async def main():
        threads, delay = [], [0.0]

        def model(inputs):
            features = inputs["x"]
            threads.append(threading.current_thread())
            threading.Event().wait(delay[0])  # a blocking model call of delay[0] seconds
            return features

        b, _ = batcher(model, max_batch_size=8, inline_max_ms=20.0)
        await b.submit(rows(8))  # untimed: on the model's thread; timed quick from here on
        await b.submit(rows(8))
        assert threads[-1] is threading.current_thread()
        delay[0] = 0.5  # calls now take far over 20 ms: after a few the average says slow
        for _ in range(5):
            await b.submit(rows(8))
        assert threads[-1] is not threading.current_thread()
        await close(b)

    asyncio.run(main())


def test_close_answers_queued_requests_then_refuses_new_ones():
    async def main():
        model = GatedModel()
        b, _ = batcher(model)
        futures = [b.submit(rows(1)) for _ in range(3)]
        await entered(model)
        closing = asyncio.ensure_future(close(b))
        model.gate.set()
        await asyncio.wait_for(closing, 30)
        assert all(f.result().shape == (1, 2) for f in futures)
        assert b.submit(rows(1)) is None

    asyncio.run(main())


def test_a_cancelled_request_does_not_disturb_its_batch():
    async def main():
        model = GatedModel()
        b, _ = batcher(model)
        first = b.submit(rows(1, 0))
        await entered(model)
        gone, kept = b.submit(rows(1, 1)), b.submit(rows(1, 2))
        gone.cancel()  # its caller went away while it waited
        model.gate.set()
        assert np.array_equal(await asyncio.wait_for(kept, 30), rows(1, 4)["x"])
        await first
        await close(b)
        assert model.calls == [1, 2]

    asyncio.run(main())


def test_a_failing_model_call_fails_every_request_of_its_batch():
    async def main():
        def model(inputs):
            raise ValueError("boom")

        b, stats = batcher(model)
        with pytest.raises(ValueError, match="boom"):
            await asyncio.wait_for(b.submit(rows(1)), 30)
        await close(b)
        assert stats.to_proto().failed_requests == 1

    asyncio.run(main())


def test_several_named_inputs_merge_row_wise_strings_included():
    async def main():
        seen = []

        def model(inputs):
            seen.append({k: v.copy() for k, v in inputs.items()})
            return inputs["x"] * 2

        b, _ = batcher(model, max_batch_size=8, inline_max_ms=1000.0)
        first = {"x": np.ones((1, 2), np.float32), "s": np.asarray([b"a"], object)}
        second = {"x": np.full((2, 2), 3, np.float32), "s": np.asarray([b"b", b"c"], object)}
        answers = await asyncio.gather(b.submit(first), b.submit(second))
        await close(b)
        assert len(seen) == 1 and seen[0]["s"].tolist() == [b"a", b"b", b"c"]
        assert seen[0]["x"].shape == (3, 2)
        assert answers[0].tolist() == [[2, 2]] and answers[1].tolist() == [[6, 6], [6, 6]]

    asyncio.run(main())


def test_a_request_the_model_fails_on_fails_alone_and_the_rest_of_its_batch_is_answered():
    async def main():
        calls = []

        def model(inputs):
            calls.append(len(inputs["x"]))
            if (inputs["x"] < 0).any():
                raise ValueError("negative")
            return inputs["x"] * 2

        def explain(inputs, exc):
            return ValueError(f"explained: {exc} in {len(inputs['x'])} rows")

        stats = ModelStats("m", 1, serve_pb2.BatchingConfig(max_batch_size=8))
        b = Batcher("m-1", model, 8, 0, stats, asyncio.get_running_loop(), 1000.0, explain=explain)
        good, bad, good2 = b.submit(rows(1, 1)), b.submit(rows(2, -1)), b.submit(rows(1, 5))
        assert (await good).tolist() == [[2, 2]] and (await good2).tolist() == [[10, 10]]
        with pytest.raises(ValueError, match="explained: negative in 2 rows"):
            await bad
        await close(b)
        assert calls == [4, 1, 2, 1]  # the merged batch, then each request alone
        assert stats.to_proto().failed_requests == 1 and stats.to_proto().rows == 2 + 2

    asyncio.run(main())


def test_metrics_address_setting():
    from cookline import config

    assert config.serve_metrics_address({}) is None
    assert config.serve_metrics_address({"COOKLINE_SERVE_METRICS_ADDR": "0.0.0.0:9154"}) == ("0.0.0.0", 9154)
    assert config.serve_metrics_address({"COOKLINE_SERVE_METRICS_ADDR": ":9154"}) == ("127.0.0.1", 9154)
    with pytest.raises(ValueError, match="COOKLINE_SERVE_METRICS_ADDR"):
        config.serve_metrics_address({"COOKLINE_SERVE_METRICS_ADDR": "localhost"})
