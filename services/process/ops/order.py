"""Row order: the buffered, seeded shuffle and re-batching."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from services.process.ops.base import Batch, OpKind


def _rows(batch: Batch) -> int:
    return len(next(iter(batch.values())))


class Shuffle(OpKind):
    """Buffered shuffle: keeps at most `buffer` rows (+ one batch), emits random rows from the pool.

    Deterministic for (seed, epoch); each epoch shuffles differently.
    """

    name = "shuffle"
    reorders_only = True  # depends on the rows per batch alone, never on their values

    def apply(self, op, where, batches, epoch, training):
        """Like tf.data's shuffle: a pool of `buffer` rows; each incoming row takes the slot of a
        randomly chosen pooled row, which is emitted. Memory: the pool plus one batch; work: two
        copies per row, whatever the buffer size."""
        buffer = self.settings(op, where)["buffer"]
        rng = np.random.default_rng([op.shuffle.seed & 0xFFFFFFFF, epoch])
        pool: Batch | None = None
        filled = 0
        for batch in batches:
            rows, start = _rows(batch), 0
            if pool is None:
                pool = {k: np.empty((buffer,) + v.shape[1:], v.dtype) for k, v in batch.items()}
            if filled < buffer:  # still filling the pool: nothing comes out yet
                take = min(buffer - filled, rows)
                for k, v in batch.items():
                    pool[k][filled : filled + take] = v[:take]
                filled, start = filled + take, take
            while start < rows:
                chunk = min(rows - start, buffer)
                slots = rng.choice(buffer, size=chunk, replace=False)
                yield {k: v[slots] for k, v in pool.items()}
                for k, v in batch.items():
                    pool[k][slots] = v[start : start + chunk]
                start += chunk
        if filled:
            order = rng.permutation(filled)
            yield {k: v[:filled][order] for k, v in pool.items()}


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
            yield {k: v[lo : lo + batch_size] for k, v in batch.items()}
        carry = {k: v[full:] for k, v in batch.items()} if full < rows else None
    if carry is not None and _rows(carry):
        yield carry
