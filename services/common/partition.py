"""Partitioned streams: worker `index` of `count` reads its own contiguous block of a subset.

The contract (cookline.v1.Partition): the subset's rows, in dataset order, are cut into
`count` blocks whose sizes differ by at most one row, so every row is in exactly one part.
Every part streams the same number of batches, ceil(ceil(rows / count) / batch_size), so
training workers that step in lock-step (collective all-reduce) all end an epoch together.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import numpy as np

from services.common.errors import invalid

Batch = dict[str, np.ndarray]


def check(partition) -> tuple[int, int]:
    """(index, count) of a Partition message (count 0 or unset: (0, 1)); INVALID_ARGUMENT naming the field."""
    index, count = int(partition.index), int(partition.count)
    if count < 0:
        raise invalid(f"partition.count: {count} is negative")
    count = max(count, 1)
    if not 0 <= index < count:
        raise invalid(f"partition.index: {index} is not in [0, {count})")
    return index, count


def bounds(rows: int, index: int, count: int) -> tuple[int, int]:
    """[lo, hi) of part `index` among the subset's `rows` rows."""
    return rows * index // count, rows * (index + 1) // count


def steps(rows: int, count: int, batch_size: int) -> int:
    """Batches every part of a `rows`-row subset streams."""
    per_part = -(-rows // count)
    return -(-per_part // batch_size)


def batch_sizes(rows: int, index: int, count: int, batch_size: int) -> list[int]:
    """Rows of each batch part `index` streams: batch_size each, the last smaller; a part whose
    rows fill one batch fewer than steps() has its last batch cut in two."""
    lo, hi = bounds(rows, index, count)
    mine = hi - lo
    if mine == 0 and rows > 0:
        raise invalid(f"partition.count: {count} parts of {rows} rows leave part {index} empty")
    full, rest = divmod(mine, batch_size)
    sizes = [batch_size] * full + ([rest] if rest else [])
    if len(sizes) < steps(rows, count, batch_size):  # short by one at most: blocks differ by one row
        last = sizes.pop()
        if last < 2:
            raise invalid(
                f"partition.count: with batch_size {batch_size}, {count} parts of {rows} rows cannot "
                f"all stream the same number of batches"
            )
        sizes += [last - last // 2, last // 2]
    return sizes


def plan(rows: int | None, partition, batch_size: int) -> Iterable[int]:
    """Batch sizes of a stream: batch_size forever without a partition (the last batch is what is
    left), else the part's exact sizes (`rows`, the subset's row count, is then required)."""
    index, count = check(partition)
    if count == 1:
        return itertools.repeat(batch_size)
    if rows is None:
        raise ValueError("a partitioned stream needs the subset's row count")
    return batch_sizes(rows, index, count, batch_size)


def _rows(batch: Batch) -> int:
    return len(next(iter(batch.values())))


def cut(batches: Iterable[Batch], sizes: Iterable[int]) -> Iterator[Batch]:
    """Regroups a stream into batches of the given sizes in turn; what is left at the end comes last.

    A batch that already has the next size passes through untouched (no copy). Rows left over
    from one input batch are joined only with the rows of the next one that complete their
    output batch (the input batches are whole shards: copying the next shard whole to join a
    few carried rows cost a fifth of collect's ReadDataset time)."""
    sizes = iter(sizes)
    want = next(sizes, None)
    carry: Batch | None = None
    for batch in batches:
        rows, start = _rows(batch), 0
        if carry is not None:
            need = None if want is None else want - _rows(carry)
            if need is None or rows < need:  # still short of a batch (or no sizes left): keep carrying
                carry = {k: np.concatenate([carry[k], v]) for k, v in batch.items()}
                continue
            yield {k: np.concatenate([carry[k], v[:need]]) for k, v in batch.items()}
            carry, start = None, need
            want = next(sizes, None)
        while want is not None and rows - start >= want:
            yield batch if (start == 0 and want == rows) else {k: v[start : start + want] for k, v in batch.items()}
            start += want
            want = next(sizes, None)
        if start < rows:
            carry = {k: v[start:] for k, v in batch.items()}
    if carry is not None and _rows(carry):
        yield carry
