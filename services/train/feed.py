"""What model.fit eats: batches pulled through process from collect, every epoch.

The deterministic part of the op chain (e.g. standardize) gives the same rows
every epoch, so the first epoch's stream is kept in memory when it fits the
budget (COOKLINE_TRAIN_CACHE_MB) and later epochs read it from there. The
random ops (shuffle, ...) run here every epoch, seeded by epoch, exactly as
process would run them. Over budget, every epoch streams the whole chain
through process instead.

Where the kept rows live:
- in TensorFlow memory, when the subset's row count is known and every random op
  only reorders rows (shuffle). The shuffle then runs on row indices in Python and
  tf.data gathers each batch from those tensors: one copy per row per epoch, and no
  Python work per batch, as model.fit on in-memory arrays does;
- else as the received NumPy batches, through the random ops (augmentation needs
  the values) in Python, handed to tf.data in whole chunks.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import tensorflow as tf

from cookline import tensors
from cookline.settings import default
from cookline.v1 import data_pb2, process_pb2
from services.common import partition
from services.common.errors import Fail
from services.process import ops as ops_lib

log = logging.getLogger("cookline.train")

# Rows per message on the process -> train hop when train re-batches itself.
PULL_BATCH = 4096
# Messages read ahead of model.fit during the first epoch (bounds that read-ahead's memory).
READ_AHEAD = 8
_END = object()


def cache_budget_bytes() -> int:
    """COOKLINE_TRAIN_CACHE_MB (default 1024; 0 turns the cache off)."""
    return int(float(os.environ.get("COOKLINE_TRAIN_CACHE_MB") or default("COOKLINE_TRAIN_CACHE_MB")) * 1024 * 1024)


def _uninitialized(shape, dtype) -> tf.Variable:
    """A variable whose memory is not written until rows arrive (zero-filling a large one would
    delay the start of training)."""
    return tf.Variable(tf.raw_ops.Empty(shape=shape, dtype=dtype, init=False), trainable=False)


class Cancelled(Exception):
    """The Train call was cancelled while a stream was being read."""


@dataclass(frozen=True)
class FeedSize:
    """How an EpochFeed cuts its subset into epochs and batches."""

    batch_size: int  # rows per batch
    first_epoch: int = 0  # epochs a resumed run already did (random ops are seeded by epoch)
    rows: int | None = None  # rows in the subset; None: not known (then required by a partitioned feed)
    budget_bytes: int | None = None  # bytes the feed may cache; None: COOKLINE_TRAIN_CACHE_MB


class EpochFeed:
    """A re-iterable source of (features, label) batches: one pass per epoch."""

    def __init__(
        self, process_call, request: process_pb2.ProcessRequest, source, cancelled: threading.Event, size: FeedSize
    ):
        """`process_call` is ProcessService.Process with raw-bytes responses (decoded here as views);
        `source` is (tensor name, dtype, per-row shape) of what the model takes, and the label's dtype
        (int32 class ids, float32 for a regressor); `size.rows`, when known, is how many rows the subset
        has. With a request.partition (one worker of several), the feed streams that part only: `rows`
        (then required) still counts the whole subset, and every epoch has the part's planned batches."""
        batch_size, rows, first_epoch = size.batch_size, size.rows, size.first_epoch
        self.process = process_call
        self.request = request
        self.batch_size = batch_size
        self.input_name, self.dtype, self.shape, self.label_dtype = source
        self.training = request.subset == data_pb2.SUBSET_TRAIN  # augmentation runs on training rows only
        self.cancelled = cancelled
        self.budget = cache_budget_bytes() if size.budget_bytes is None else size.budget_bytes
        self.rows = rows
        self.fixed_ops, self.random_ops = ops_lib.split_at_first_random(list(request.ops))
        self.sizes: list[int] | None = None  # the batch sizes of a part's epoch (None: batch_size each)
        index, count = partition.check(request.partition)
        if count > 1:
            if rows is None:
                raise ValueError("a partitioned feed needs the subset's row count (rows)")
            self.sizes = partition.batch_sizes(rows, index, count, batch_size)
            self.rows = sum(self.sizes)
            self.random_ops = ops_lib.for_partition(self.random_ops, index)  # as process seeds them
        self.cache: list[dict[str, np.ndarray]] | None = None
        # The in-TensorFlow store: (features, labels) variables, and the rows of each received message.
        self.store: tuple[tf.Variable, tf.Variable] | None = None
        self.spans: list[tuple[int, int]] | None = None
        self.epoch = first_epoch  # random ops are seeded by epoch: a resumed run continues the sequence
        self.epochs_streamed = 0  # how many epochs pulled from process (for tests and logs)
        self._ahead: queue.Queue | None = None

    def _row_bytes(self) -> int:
        return (
            int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize
            + np.dtype(self.label_dtype).itemsize
        )

    def gathers(self) -> bool:
        """True when the rows are kept in TensorFlow and each batch is gathered by index."""
        return (
            self.rows is not None
            and self.rows > 0
            and self.rows * self._row_bytes() <= self.budget
            and all(ops_lib.kind_for(op).reorders_only for op in self.random_ops)
        )

    def start(self) -> EpochFeed:
        """Starts pulling the first epoch now, so transport overlaps model building and tracing."""
        if self.budget > 0 and self._ahead is None:
            if self.gathers():
                assert self.rows is not None  # gathers() needs the row count
                self.store = (
                    _uninitialized([self.rows, *self.shape], self.dtype),
                    _uninitialized([self.rows], self.label_dtype),
                )
                self._ahead = queue.Queue()  # of row spans: the rows themselves are in the store already
                target = self._fill_store
            else:
                self._ahead = queue.Queue(maxsize=READ_AHEAD)
                target = self._read_ahead
            threading.Thread(target=target, name="epoch0-read-ahead", daemon=True).start()
        return self

    def _fill_store(self) -> None:
        """Writes the first epoch's rows into the store as they arrive and queues their spans."""
        assert self.store is not None and self._ahead is not None and self.rows is not None  # set by start()
        features, labels = self.store
        filled = 0
        try:
            for batch in self._stream(self.fixed_ops, PULL_BATCH, self.epoch):
                x, y = self._pair(batch)
                if filled + len(y) > self.rows:
                    raise Fail(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"process sent more than the {self.rows} rows this subset has",
                    )
                # a scatter writes just these rows (a slice assign copies the whole variable each time)
                rows = tf.range(filled, filled + len(y))
                features.scatter_update(tf.IndexedSlices(x, rows))
                labels.scatter_update(tf.IndexedSlices(y, rows))
                self._ahead.put((filled, filled + len(y)))
                filled += len(y)
            if filled != self.rows:
                raise Fail(
                    grpc.StatusCode.FAILED_PRECONDITION, f"process sent {filled} rows where this subset has {self.rows}"
                )
            self._ahead.put(_END)
        except Cancelled:
            pass
        except BaseException as exc:  # re-raised on the training thread
            self._ahead.put(exc)

    def _read_ahead(self) -> None:
        try:
            for batch in self._caching(self._stream(self.fixed_ops, PULL_BATCH, self.epoch)):
                self._put(batch)  # blocks while model.fit is behind: flow control
            self._put(_END)
        except Cancelled:
            pass
        except BaseException as exc:  # re-raised on the training thread
            self._put(exc)

    def _put(self, item) -> None:
        """Queues an item for the training thread unless the call is cancelled (then nobody reads)."""
        assert self._ahead is not None  # set by start()
        while not self.cancelled.is_set():
            try:
                self._ahead.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise Cancelled()

    def _from_read_ahead(self) -> Iterator:
        """What the read-ahead thread queued, until its end; Cancelled once the call is (that thread
        then stops without queuing anything more, so nothing else would wake this one)."""
        assert self._ahead is not None  # set by start()
        while True:
            try:
                item = self._ahead.get(timeout=0.5)
            except queue.Empty:
                if self.cancelled.is_set():
                    raise Cancelled() from None
                continue
            if item is _END:
                return
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

    def full_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """One pass over the subset streamed through process with every op, as whole rows (every tensor,
        not just the model's input and label): what the detector is evaluated on."""
        return self._stream(self.fixed_ops + self.random_ops, self.batch_size, self.epoch)

    def _caching(self, stream) -> Iterator[dict[str, np.ndarray]]:
        """Passes a stream through, keeping it as the cache if it all fits the budget."""
        kept: list[dict[str, np.ndarray]] | None = []
        size = 0
        for batch in stream:
            if kept is not None:
                size += sum(a.nbytes for a in batch.values())
                if size <= self.budget:
                    kept.append(batch)
                else:
                    kept = None
                    log.info(
                        "training stream exceeds the cache budget (%d MB): streaming every epoch", self.budget >> 20
                    )
            yield batch
        if kept is not None:
            self.cache = kept

    def _spans(self) -> Iterator[tuple[int, int]]:
        """The row spans of the messages: as they arrive in the first epoch, then from memory."""
        if self.spans is not None:
            yield from self.spans
            return
        self.epochs_streamed += 1
        spans = []
        for span in self._from_read_ahead():
            spans.append(span)
            yield span
        self.spans = spans

    def order(self) -> Iterator[np.ndarray]:
        """One epoch of row indices into the store in training order, in chunks of any size: the
        random ops run on the indices, in the message sizes process sent, as on the rows themselves."""
        epoch = self.epoch
        self.epoch += 1
        indices = ({"index": np.arange(lo, hi)} for lo, hi in self._spans())
        for chunk in ops_lib.chain(self.random_ops, indices, epoch, training=self.training):
            if self.cancelled.is_set():
                raise Cancelled()
            yield chunk["index"]

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch of (features, label) rows in training order, in chunks of any size."""
        epoch = self.epoch
        self.epoch += 1
        if self.budget > 0 and self.epochs_streamed == 0:  # the first pass: what the read-ahead pulled
            self.epochs_streamed += 1
            source = self.start()._from_read_ahead()
        elif self.cache is not None:
            source = iter(self.cache)
        else:  # no cache: the whole chain runs in process, every epoch
            self.epochs_streamed += 1
            for batch in self._stream(self.fixed_ops + self.random_ops, self.batch_size, epoch):
                yield self._pair(batch)
            return
        for batch in ops_lib.chain(self.random_ops, source, epoch, training=self.training):
            if self.cancelled.is_set():
                raise Cancelled()
            yield self._pair(batch)

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch of (features, label) batches of batch_size rows (the last may be smaller)."""
        for batch in ops_lib.rebatch(({"x": x, "y": y} for x, y in self.chunks()), self.batch_size):
            yield batch["x"], batch["y"]

    def _pair(self, batch) -> tuple[np.ndarray, np.ndarray]:
        return batch[self.input_name].astype(self.dtype, copy=False), batch["label"]

    def steps(self) -> int | None:
        """Batches per epoch when dataset() is endless (rows kept in TensorFlow), else None: then
        each iteration of dataset() is one epoch."""
        if self.sizes is not None:
            return len(self.sizes)
        if self.start().store is None:
            return None
        assert self.rows is not None  # the store is kept only when the row count is known
        return -(-self.rows // self.batch_size)

    def dataset(self) -> tf.data.Dataset:
        """A tf.data pipeline of the epochs: endless when steps() says how long an epoch is, else
        one epoch each time it is iterated.

        Python hands over whole chunks (of rows, or of row indices into the store) and tf.data
        cuts them into batch_size batches: a Python call per batch costs more than the training
        step of a small model."""
        store = self.start().store
        if store is not None:
            # Endless, one pass per epoch (see steps()): one iterator serves every epoch, so the next
            # epoch's first batches are prefetched while the last one ends.
            features, labels = store
            spec = tf.TensorSpec([None], tf.int64)
            if self.sizes is None:
                indices = tf.data.Dataset.from_generator(self.order, output_signature=spec).rebatch(self.batch_size)
            else:  # a part's planned batches, cut here
                indices = tf.data.Dataset.from_generator(
                    lambda: (b["i"] for b in partition.cut(({"i": i} for i in self.order()), self.sizes)),
                    output_signature=spec,
                )
            return indices.map(lambda i: (tf.gather(features, i), tf.gather(labels, i))).repeat().prefetch(2)
        signature = (tf.TensorSpec([None, *self.shape], self.dtype), tf.TensorSpec([None], self.label_dtype))
        if self.sizes is not None:  # a part's planned batches, cut here
            return tf.data.Dataset.from_generator(self._planned, output_signature=signature).prefetch(2)
        return (
            tf.data.Dataset.from_generator(self.chunks, output_signature=signature).rebatch(self.batch_size).prefetch(2)
        )

    def _planned(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch of a part's batches, in its planned sizes."""
        for batch in partition.cut(({"x": x, "y": y} for x, y in self.chunks()), self.sizes or []):
            yield batch["x"], batch["y"]
