"""The partition contract's arithmetic (services/common/partition.py): blocks, batch plans, cutting."""

import numpy as np
import pytest

from cookline.v1 import data_pb2
from services.common import partition
from services.common.errors import Fail


@pytest.mark.parametrize("rows", [1, 7, 100, 241, 1001])
@pytest.mark.parametrize("count", [1, 2, 3, 7])
@pytest.mark.parametrize("batch_size", [2, 5, 64])
def test_blocks_cover_every_row_once_and_every_part_has_the_same_batch_count(rows, count, batch_size):
    if count > rows:
        return
    blocks = [partition.bounds(rows, k, count) for k in range(count)]
    assert blocks[0][0] == 0 and blocks[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))  # contiguous, disjoint
    assert max(hi - lo for lo, hi in blocks) - min(hi - lo for lo, hi in blocks) <= 1
    plans = [partition.batch_sizes(rows, k, count, batch_size) for k in range(count)]
    assert len({len(p) for p in plans}) == 1 == len({partition.steps(rows, count, batch_size)} | {len(plans[0])})
    assert [sum(p) for p in plans] == [hi - lo for lo, hi in blocks]
    assert all(1 <= size <= batch_size for p in plans for size in p)


def test_impossible_plans_name_the_field():
    with pytest.raises(Fail, match="partition.count: 5 parts of 3 rows leave part 0 empty"):
        partition.batch_sizes(3, 0, 5, 2)
    with pytest.raises(Fail, match="partition.count: with batch_size 1"):
        partition.batch_sizes(5, 0, 2, 1)  # 2 and 3 rows: 2 vs 3 batches of one row
    with pytest.raises(Fail, match=r"partition.index: 2 is not in \[0, 2\)"):
        partition.check(data_pb2.Partition(index=2, count=2))


def test_cut_follows_the_plan_across_incoming_batches_and_passes_exact_ones_through():
    incoming = [{"x": np.arange(0, 7)}, {"x": np.arange(7, 10)}, {"x": np.arange(10, 13)}]
    out = list(partition.cut(iter(incoming), [5, 5, 2, 1]))
    assert [b["x"].tolist() for b in out] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11], [12]]
    exact = {"x": np.arange(4)}
    assert next(partition.cut(iter([exact]), [4])) is exact  # no copy


@pytest.mark.parametrize("seed", range(20))
def test_cut_keeps_every_row_in_order_whatever_the_incoming_and_planned_sizes(seed):
    rng = np.random.default_rng(seed)
    incoming_sizes = rng.integers(1, 40, size=rng.integers(1, 12))
    start, incoming = 0, []
    for n in incoming_sizes:
        incoming.append({"x": np.arange(start, start + n), "y": -np.arange(start, start + n)})
        start += n
    plan = list(rng.integers(1, 30, size=rng.integers(1, 10)))
    out = list(partition.cut(iter(incoming), plan))
    assert np.concatenate([b["x"] for b in out]).tolist() == list(range(start))  # every row once, in order
    assert all((b["y"] == -b["x"]).all() for b in out)
    sizes = [len(b["x"]) for b in out]
    assert sizes[:-1] == plan[: len(sizes) - 1]  # the plan's sizes in turn; the last is what is left
