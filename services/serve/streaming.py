"""Bidirectional prediction streams (PredictStream, OIP ModelStreamInfer): read
ahead, batch, answer in order.

A reader task queues each message on the model's batcher as soon as it arrives,
so the messages of one stream (and of other streams and unary calls) merge into
batches; the response generator answers them in arrival order. At most WINDOW
messages wait for their answers; beyond that the reader stops reading and gRPC
flow control slows the client down. When the call ends or the client cancels,
the generator is cancelled and cancels the reader: nothing keeps working for a
stream that is gone.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

# Messages read ahead of their responses, per stream.
WINDOW = 256
_END = object()


class ActiveStreams:
    """How many prediction streams are open (GetStats.active_streams)."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()  # also read by the metrics endpoint's thread

    def add(self, delta: int) -> None:
        with self._lock:
            self.count += delta


async def answer_in_order(
    requests: AsyncIterable, active: ActiveStreams, submit: Callable[..., Awaitable], answer: Callable, error: Callable
) -> AsyncIterator:
    """Yields one response per request, in order.

    await submit(msg) -> (model, future) queues it (or raises); answer(msg, model,
    scores) -> response; error(msg, exc) -> response for a failed message, or
    raises to end the stream with that error (fail-fast).
    """
    pending: asyncio.Queue = asyncio.Queue(maxsize=WINDOW)

    async def read():
        try:
            async for message in requests:
                try:
                    item = (message, *await submit(message))
                except Exception as exc:  # answered in order, as an error
                    item = (message, None, exc)
                await pending.put(item)
        except Exception:  # the call broke or ended: nothing more to read
            pass
        await pending.put(_END)  # the client half-closed: answer what was read, then end

    active.add(+1)
    reader = asyncio.ensure_future(read())
    try:
        while (item := await pending.get()) is not _END:
            message, model, outcome = item
            try:
                if model is None:
                    raise outcome
                response = answer(message, model, await outcome)
            except Exception as exc:  # one bad message does not end the stream
                response = error(message, exc)
            yield response
    finally:
        reader.cancel()
        active.add(-1)
