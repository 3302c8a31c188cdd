"""Bidirectional prediction streams (PredictStream, OIP ModelStreamInfer): read
ahead, batch, answer in order.

A reader thread queues each message on the model's batcher as soon as it
arrives, so the messages of one stream (and of other streams and unary calls)
merge into batches; the response generator answers them in arrival order. At
most WINDOW messages wait for their answers; beyond that the reader stops
reading and gRPC flow control slows the client down. When the call ends or the
client cancels, both sides stop and the reader thread exits.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator

# Messages read ahead of their responses, per stream.
WINDOW = 256
_END = object()


class ActiveStreams:
    """How many prediction streams are open (GetStats.active_streams)."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    def add(self, delta: int) -> None:
        with self._lock:
            self.count += delta


def answer_in_order(requests: Iterable, context, active: ActiveStreams,
                    submit: Callable, answer: Callable, error: Callable) -> Iterator:
    """Yields one response per request, in order.

    submit(msg) -> (model, future) queues it (or raises); answer(msg, model,
    scores) -> response; error(msg, exc) -> response for a failed message, or
    raises to end the stream with that error (fail-fast).
    """
    pending: queue.Queue = queue.Queue(maxsize=WINDOW)
    stop = threading.Event()

    def read():
        try:
            for message in requests:
                if stop.is_set():
                    break
                try:
                    pending.put((message, *submit(message)))
                except Exception as exc:  # noqa: BLE001 - answered in order, as an error
                    pending.put((message, None, exc))
        except Exception:  # noqa: BLE001 - the call ended (cancelled or broken): nothing more to read
            pass
        finally:
            pending.put(_END)

    def on_done():  # the call ended or was cancelled: wake the generator
        stop.set()
        try:
            pending.put_nowait(_END)
        except queue.Full:
            pass

    context.add_callback(on_done)
    active.add(+1)
    reader = threading.Thread(target=read, name="stream-reader", daemon=True)
    reader.start()
    try:
        while (item := pending.get()) is not _END and not stop.is_set():
            message, model, outcome = item
            try:
                if model is None:
                    raise outcome
                response = answer(message, model, outcome.result())
            except Exception as exc:  # noqa: BLE001 - one bad message does not end the stream
                response = error(message, exc)
            yield response
    finally:
        stop.set()
        while True:  # free a reader blocked on a full window so it can see `stop` and exit
            try:
                pending.get_nowait()
            except queue.Empty:
                break
        active.add(-1)
