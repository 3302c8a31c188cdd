"""Partitioned streams through the real collect and process services on S3: worker k of N gets
a disjoint block of the subset, every row once per epoch, its own shuffle, the same batch count."""

import grpc
import numpy as np
import pytest

from cookline import channels, tensors
from cookline.v1 import collect_pb2, data_pb2, process_pb2, process_pb2_grpc
from cookline.v1 import pipeline_pb2 as pb
from dataplane import collect_stub, ingest
from services.common.splits import assignment as split_assignment

ROWS = 1001  # 50 float columns: about four ~50 KB shards, so parts start and end inside shards
SPLIT = data_pb2.SplitSpec(validation=0.2, seed=3)


@pytest.fixture(scope="module")
def numbered(data_plane, tmp_path_factory):
    """A dataset whose feature is the row number, so every streamed row says which row it is."""
    env = data_plane[1]
    path = tmp_path_factory.mktemp("part") / "rows.csv"
    pad = ",".join(f"p{j}" for j in range(49))
    path.write_text(f"x,{pad},label\n" + "".join(f"{i},{','.join(['0'] * 49)},c{i % 3}\n" for i in range(ROWS)))
    info = ingest(env, "partitioned", str(path), label="label").dataset
    assert info.num_shards >= 3  # parts start and end inside shards, and whole shards are skipped
    return env, info.ref


def _process(env, ref, ops, count, batch_size, epoch=0):
    """The ids of every batch each of `count` parts streams from process."""
    stub = process_pb2_grpc.ProcessServiceStub(channels.channel("process", env))
    parts = []
    for index in range(count):
        request = process_pb2.ProcessRequest(
            dataset=ref,
            split=SPLIT,
            subset=data_pb2.SUBSET_TRAIN,
            ops=ops,
            batch_size=batch_size,
            epoch=epoch,
            partition=data_pb2.Partition(index=index, count=count),
        )
        parts.append(
            [
                tensors.batch_to_numpy(r.batch)["features"][:, 0].astype(int).tolist()
                for r in stub.Process(request, timeout=60)
            ]
        )
    return parts


def _train_rows():
    return np.arange(ROWS)[split_assignment(ROWS, SPLIT) == data_pb2.SUBSET_TRAIN].tolist()


@pytest.mark.parametrize("count,batch_size", [(2, 16), (3, 7), (4, 60)])
def test_parts_are_disjoint_blocks_covering_the_subset_with_equal_batch_counts(numbered, count, batch_size):
    env, ref = numbered
    train = _train_rows()
    parts = _process(env, ref, [], count, batch_size)  # no ops: collect's stream, forwarded as is
    flat = [[row for batch in part for row in batch] for part in parts]
    assert sorted(sum(flat, [])) == train  # every row exactly once
    # contiguous blocks of the subset, in part order, sizes within one row
    assert sum((sorted(f) for f in flat), []) == train
    assert max(map(len, flat)) - min(map(len, flat)) <= 1
    assert len({len(part) for part in parts}) == 1  # same number of batches on every part
    assert all(len(b) <= batch_size for part in parts for b in part)


def test_each_part_shuffles_with_its_own_seed_and_still_holds_its_block(numbered):
    env, ref = numbered
    shuffle = [pb.Op(shuffle=pb.ShuffleOp(buffer=1000, seed=9))]
    parts = _process(env, ref, shuffle, 2, 16)
    again = _process(env, ref, shuffle, 2, 16)
    plain = _process(env, ref, [], 2, 16)
    assert parts == again  # deterministic for (seed, part, epoch)
    for shuffled, ordered in zip(parts, plain, strict=True):
        assert sum(shuffled, []) != sum(ordered, []) and sorted(sum(shuffled, [])) == sum(ordered, [])
        assert len(shuffled) == len(ordered)
    # the two parts' permutations differ (positions within each block)
    blocks = [np.argsort(np.argsort(sum(p, []))).tolist() for p in parts]
    assert blocks[0][: len(blocks[1])] != blocks[1][: len(blocks[0])]
    assert _process(env, ref, shuffle, 2, 16, epoch=1) != parts  # and each epoch differently


def test_a_part_one_row_short_cuts_its_last_batch_in_two(numbered):
    env, ref = numbered
    assert len(_train_rows()) == 801  # parts of 400 and 401 rows: 40 and 41 batches of 10 rows
    parts = _process(env, ref, [], 2, 10)
    assert [len(b) for b in parts[0]] == [10] * 39 + [5, 5]
    assert [len(b) for b in parts[1]] == [10] * 40 + [1]


def test_collect_reads_a_part_of_every_row_and_rejects_bad_partitions(numbered):
    env, ref = numbered
    stub = collect_stub(env)
    got = [
        tensors.batch_to_numpy(r.batch)["features"][:, 0].astype(int).tolist()
        for r in stub.ReadDataset(
            collect_pb2.ReadDatasetRequest(dataset=ref, batch_size=50, partition=data_pb2.Partition(index=2, count=3)),
            timeout=60,
        )
    ]
    assert sum(got, []) == list(range(667, 1001)) and [len(b) for b in got] == [50] * 6 + [34]
    for part, field in (
        (data_pb2.Partition(index=3, count=3), "partition.index"),
        (data_pb2.Partition(index=0, count=-1), "partition.count"),
        (data_pb2.Partition(index=0, count=2000), "partition.count"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            list(stub.ReadDataset(collect_pb2.ReadDatasetRequest(dataset=ref, partition=part), timeout=60))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details()
