"""What model.fit eats: batches pulled through process from collect, every epoch.

The deterministic part of the op chain (e.g. standardize) gives the same rows
every epoch, so the first epoch's stream is kept in memory when it fits the
budget (COOKLINE_TRAIN_CACHE_MB) and later epochs read it from there. The
random ops (shuffle, ...) run here every epoch, seeded by epoch, exactly as
process would run them. Over budget, every epoch streams the whole chain
through process instead.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Iterator

import numpy as np
import tensorflow as tf

from cookline import tensors
from cookline.v1 import data_pb2, process_pb2
from services.process import ops as ops_lib

log = logging.getLogger("cookline.train")

# Rows per message on the process -> train hop when train re-batches itself.
PULL_BATCH = 4096
# Messages read ahead of model.fit during the first epoch (bounds that read-ahead's memory).
READ_AHEAD = 8
_END = object()


def cache_budget_bytes() -> int:
    """COOKLINE_TRAIN_CACHE_MB (default 1024; 0 turns the cache off)."""
    return int(float(os.environ.get("COOKLINE_TRAIN_CACHE_MB") or 1024) * 1024 * 1024)


class Cancelled(Exception):
    """The Train call was cancelled while a stream was being read."""


class EpochFeed:
    """A re-iterable source of (features, label) batches: one pass per epoch."""

    def __init__(self, process_call, request: process_pb2.ProcessRequest, batch_size: int, source,
                 cancelled: threading.Event, budget_bytes: int | None = None, first_epoch: int = 0):
        """`process_call` is ProcessService.Process with raw-bytes responses (decoded here as views);
        `source` is (tensor name, dtype, per-row shape) of what the model takes, and the label's dtype
        (int32 class ids, float32 for a regressor)."""
        self.process = process_call
        self.request = request
        self.batch_size = batch_size
        self.input_name, self.dtype, self.shape, self.label_dtype = source
        self.training = request.subset == data_pb2.SUBSET_TRAIN  # augmentation runs on training rows only
        self.cancelled = cancelled
        self.budget = cache_budget_bytes() if budget_bytes is None else budget_bytes
        self.fixed_ops, self.random_ops = ops_lib.split_at_first_random(list(request.ops))
        self.cache: list[dict[str, np.ndarray]] | None = None
        self.epoch = first_epoch  # random ops are seeded by epoch: a resumed run continues the sequence
        self.epochs_streamed = 0  # how many epochs pulled from process (for tests and logs)
        self._ahead: queue.Queue | None = None

    def start(self) -> "EpochFeed":
        """Starts pulling the first epoch now, so transport overlaps model building and tracing."""
        if self.budget > 0 and self._ahead is None:
            self._ahead = queue.Queue(maxsize=READ_AHEAD)
            threading.Thread(target=self._read_ahead, name="epoch0-read-ahead", daemon=True).start()
        return self

    def _read_ahead(self) -> None:
        try:
            for batch in self._caching(self._stream(self.fixed_ops, PULL_BATCH, self.epoch)):
                self._put(batch)  # blocks while model.fit is behind: flow control
            self._put(_END)
        except Cancelled:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised on the training thread
            self._put(exc)

    def _put(self, item) -> None:
        """Queues an item for the training thread unless the call is cancelled (then nobody reads)."""
        while not self.cancelled.is_set():
            try:
                self._ahead.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise Cancelled()

    def _from_read_ahead(self) -> Iterator[dict[str, np.ndarray]]:
        while (item := self._ahead.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def _stream(self, ops, batch_size: int, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        request = process_pb2.ProcessRequest()
        request.CopyFrom(self.request)
        del request.ops[:]
        request.ops.extend(ops)
        request.batch_size, request.epoch = batch_size, epoch
        call = self.process(request)
        try:
            for response in call:
                if self.cancelled.is_set():
                    raise Cancelled()
                yield tensors.decode_batch(response)[0]
        finally:
            call.cancel()

    def _caching(self, stream) -> Iterator[dict[str, np.ndarray]]:
        """Passes a stream through, keeping it as the cache if it all fits the budget."""
        kept, size = [], 0
        for batch in stream:
            if kept is not None:
                size += sum(a.nbytes for a in batch.values())
                if size <= self.budget:
                    kept.append(batch)
                else:
                    kept = None
                    log.info("training stream exceeds the cache budget (%d MB): streaming every epoch",
                             self.budget >> 20)
            yield batch
        if kept is not None:
            self.cache = kept

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch of (features, label) batches of batch_size rows."""
        epoch = self.epoch
        self.epoch += 1
        if self.cache is not None:
            source = iter(self.cache)
        elif self.budget > 0 and self.epochs_streamed == 0:
            self.epochs_streamed += 1
            source = self._from_read_ahead() if self.start()._ahead else None
        else:  # no cache: the whole chain runs in process, every epoch
            self.epochs_streamed += 1
            for batch in self._stream(self.fixed_ops + self.random_ops, self.batch_size, epoch):
                yield self._pair(batch)
            return
        for batch in ops_lib.apply(self.random_ops, source, epoch, self.batch_size, training=self.training):
            if self.cancelled.is_set():
                raise Cancelled()
            yield self._pair(batch)

    def _pair(self, batch) -> tuple[np.ndarray, np.ndarray]:
        return batch[self.input_name].astype(self.dtype, copy=False), batch["label"]

    def dataset(self) -> tf.data.Dataset:
        """A tf.data pipeline that calls batches() each time it is iterated (each epoch)."""
        signature = (tf.TensorSpec([None, *self.shape], self.dtype), tf.TensorSpec([None], self.label_dtype))
        return tf.data.Dataset.from_generator(self.batches, output_signature=signature).prefetch(2)
