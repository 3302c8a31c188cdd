"""Row order: the buffered, seeded shuffle and re-batching."""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from services.process.ops.base import Batch, OpKind, in_range

DEFAULT_SHUFFLE_BUFFER = 1000
MAX_SHUFFLE_BUFFER = 10_000_000


def _rows(batch: Batch) -> int:
    return len(next(iter(batch.values())))


class Shuffle(OpKind):
    """Buffered shuffle: keeps at most `buffer` rows (+ one batch), emits random rows from the pool.

    Deterministic for (seed, epoch); each epoch shuffles differently.
    """

    name = "shuffle"
    deterministic = False

    def check(self, op, where):
        in_range(f"{where}.buffer", op.shuffle.buffer, 0, MAX_SHUFFLE_BUFFER)

    def apply(self, op, where, batches, epoch, training):
        buffer = op.shuffle.buffer or DEFAULT_SHUFFLE_BUFFER
        rng = np.random.default_rng([op.shuffle.seed & 0xFFFFFFFF, epoch])
        pool: Batch | None = None
        for batch in batches:
            pool = batch if pool is None else {k: np.concatenate([pool[k], v]) for k, v in batch.items()}
            excess = _rows(pool) - buffer
            if excess > 0:
                pick = rng.choice(_rows(pool), size=excess, replace=False)
                keep = np.ones(_rows(pool), dtype=bool)
                keep[pick] = False
                yield {k: v[pick] for k, v in pool.items()}
                pool = {k: v[keep] for k, v in pool.items()}
        if pool is not None and _rows(pool):
            order = rng.permutation(_rows(pool))
            yield {k: v[order] for k, v in pool.items()}


def rebatch(batches: Iterable[Batch], batch_size: int) -> Iterator[Batch]:
    """Regroups a stream into batches of exactly batch_size rows (the last may be smaller).

    A batch that already has batch_size rows passes through untouched (no copy).
    """
    carry: Batch | None = None
    for batch in batches:
        if carry is not None:
            batch = {k: np.concatenate([carry[k], v]) for k, v in batch.items()}
        rows = _rows(batch)
        if rows == batch_size:
            yield batch
            carry = None
            continue
        full = rows - rows % batch_size
        for lo in range(0, full, batch_size):
            yield {k: v[lo:lo + batch_size] for k, v in batch.items()}
        carry = {k: v[full:] for k, v in batch.items()} if full < rows else None
    if carry is not None and _rows(carry):
        yield carry
