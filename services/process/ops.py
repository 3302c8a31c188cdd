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
    needs = [i for i, op in enumerate(ops) if op.WhichOneof("kind") == "standardize"]
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
    """Buffered shuffle: keeps at most `buffer` rows (+ one batch), emits random rows from the pool."""
    buffer = op.shuffle.buffer or DEFAULT_SHUFFLE_BUFFER
    rng = np.random.default_rng([op.shuffle.seed & 0xFFFFFFFF, epoch])
    pool: Batch | None = None
    for batch in batches:
        pool = batch if pool is None else {k: np.concatenate([pool[k], v]) for k, v in batch.items()}
        excess = len(pool["label"]) - buffer
        if excess > 0:
            pick = rng.choice(len(pool["label"]), size=excess, replace=False)
            keep = np.ones(len(pool["label"]), dtype=bool)
            keep[pick] = False
            yield {k: v[pick] for k, v in pool.items()}
            pool = {k: v[keep] for k, v in pool.items()}
    if pool is not None and len(pool["label"]):
        order = rng.permutation(len(pool["label"]))
        yield {k: v[order] for k, v in pool.items()}


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
