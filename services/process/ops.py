"""Process ops on streams of row batches (dicts of numpy arrays sharing rows).

`validate` checks an op list, `fit` computes fitted parameters from the
training rows, `apply` transforms a stream. All of it streams: memory is bounded
by one batch plus a shuffle buffer, however large the dataset.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from cookline import tensors
from cookline.v1 import pipeline_pb2
from services.common.errors import Fail, invalid

import grpc

Batch = dict[str, np.ndarray]
# Ops that need fitting on the training rows before they can be applied.
FITTED_KINDS = frozenset({"standardize"})
# Ops whose output changes from epoch to epoch: a consumer may cache what comes before them.
RANDOM_KINDS = frozenset({"shuffle"})
DEFAULT_SHUFFLE_BUFFER = 1000
MAX_SHUFFLE_BUFFER = 10_000_000


def validate(ops: Iterable[pipeline_pb2.Op]) -> None:
    """INVALID_ARGUMENT naming process[i] for an empty or out-of-range op."""
    for i, op in enumerate(ops):
        kind = op.WhichOneof("kind")
        if kind is None:
            raise invalid(f"process[{i}]: no op given (known ops: standardize, shuffle)")
        if kind == "shuffle" and not 0 <= op.shuffle.buffer <= MAX_SHUFFLE_BUFFER:
            raise invalid(f"process[{i}].shuffle.buffer: {op.shuffle.buffer} is not in [1, {MAX_SHUFFLE_BUFFER}]")


class _Moments:
    """Streaming mean/variance per column (Chan et al.'s parallel merge, float64)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float64, copy=False)
        n = len(x)
        if n == 0:
            return
        mean = x.mean(axis=0)
        m2 = ((x - mean) ** 2).sum(axis=0)
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta ** 2 * self.count * n / total
        self.count = total

    @property
    def variance(self) -> np.ndarray:
        return self.m2 / self.count


def fit(ops: list[pipeline_pb2.Op], batches: Iterable[Batch]) -> tuple[list[pipeline_pb2.Op], int]:
    """Fits every op that needs it on `batches` (the TRAIN rows); returns fitted copies and the row count.

    Ops are fitted in one pass; an op sees the data as transformed by the ops before it
    (which, for the ops here, only matters through standardize, which nothing before alters).
    """
    validate(ops)
    fitted = [pipeline_pb2.Op() for _ in ops]
    for out, op in zip(fitted, ops):
        out.CopyFrom(op)
        out.ClearField("fitted")
    needs = [i for i, op in enumerate(ops) if op.WhichOneof("kind") in FITTED_KINDS]
    moments = _Moments()
    rows = 0
    for batch in batches:
        rows += len(batch["features"])
        if needs:
            moments.add(batch["features"])
    if needs and rows == 0:
        raise Fail(grpc.StatusCode.FAILED_PRECONDITION, "process: the training split has no rows to fit on")
    for i in needs:
        tensors.from_numpy(moments.mean, out=fitted[i].fitted["mean"])
        tensors.from_numpy(moments.variance, out=fitted[i].fitted["variance"])
    return fitted, rows


def needs_fit(ops: Iterable[pipeline_pb2.Op]) -> bool:
    """True when any op must be fitted on the training rows first."""
    return any(op.WhichOneof("kind") in FITTED_KINDS for op in ops)


def split_at_first_random(ops: list[pipeline_pb2.Op]) -> tuple[list[pipeline_pb2.Op], list[pipeline_pb2.Op]]:
    """(deterministic prefix, rest from the first random op on): the prefix's output is the
    same every epoch, so it can be computed once and cached; the rest runs every epoch."""
    for i, op in enumerate(ops):
        if op.WhichOneof("kind") in RANDOM_KINDS:
            return ops[:i], ops[i:]
    return ops, []


def _standardize(op: pipeline_pb2.Op, index: int, batches: Iterator[Batch]) -> Iterator[Batch]:
    if "mean" not in op.fitted or "variance" not in op.fitted:
        raise Fail(grpc.StatusCode.FAILED_PRECONDITION, f"process[{index}].standardize is not fitted (call Fit first)")
    mean = tensors.to_numpy(op.fitted["mean"]).astype(np.float32)
    std = np.sqrt(tensors.to_numpy(op.fitted["variance"])).astype(np.float32)
    std[std == 0] = 1.0  # a constant column stays 0 rather than becoming NaN
    for batch in batches:
        features = batch["features"]
        if features.shape[1:] != mean.shape:
            raise invalid(f"process[{index}].standardize: fitted on {mean.shape[0]} features, got {features.shape[1:]}")
        yield {**batch, "features": (features - mean) / std}


def _shuffle(op: pipeline_pb2.Op, epoch: int, batches: Iterator[Batch]) -> Iterator[Batch]:
    """Buffered shuffle, like tf.data's: a pool of `buffer` rows; each incoming row takes the
    slot of a randomly chosen pooled row, which is emitted. Memory: the pool plus one batch;
    work: two copies per row, whatever the buffer size."""
    buffer = op.shuffle.buffer or DEFAULT_SHUFFLE_BUFFER
    rng = np.random.default_rng([op.shuffle.seed & 0xFFFFFFFF, epoch])
    pool: Batch | None = None
    filled = 0
    for batch in batches:
        rows = len(batch["label"])
        start = 0
        if pool is None:
            pool = {k: np.empty((buffer,) + v.shape[1:], v.dtype) for k, v in batch.items()}
        if filled < buffer:  # still filling the pool: nothing comes out yet
            take = min(buffer - filled, rows)
            for k, v in batch.items():
                pool[k][filled:filled + take] = v[:take]
            filled, start = filled + take, take
        while start < rows:
            chunk = min(rows - start, buffer)
            slots = rng.choice(buffer, size=chunk, replace=False)
            yield {k: v[slots] for k, v in pool.items()}
            for k, v in batch.items():
                pool[k][slots] = v[start:start + chunk]
            start += chunk
    if filled:
        order = rng.permutation(filled)
        yield {k: v[:filled][order] for k, v in pool.items()}


def rebatch(batches: Iterable[Batch], batch_size: int) -> Iterator[Batch]:
    """Regroups a stream into batches of exactly batch_size rows (the last may be smaller)."""
    carry: Batch | None = None
    for batch in batches:
        if carry is not None:
            batch = {k: np.concatenate([carry[k], v]) for k, v in batch.items()}
        rows = len(next(iter(batch.values())))
        full = rows - rows % batch_size
        for lo in range(0, full, batch_size):
            yield {k: v[lo:lo + batch_size] for k, v in batch.items()}
        carry = {k: v[full:] for k, v in batch.items()} if full < rows else None
    if carry is not None:
        yield carry


def apply(ops: list[pipeline_pb2.Op], batches: Iterable[Batch], epoch: int, batch_size: int) -> Iterator[Batch]:
    """Applies `ops` in order to a stream and re-batches it to batch_size rows."""
    validate(ops)
    stream: Iterator[Batch] = iter(batches)
    for i, op in enumerate(ops):
        kind = op.WhichOneof("kind")
        if kind == "standardize":
            stream = _standardize(op, i, stream)
        elif kind == "shuffle":
            stream = _shuffle(op, epoch, stream)
    return rebatch(stream, batch_size)
