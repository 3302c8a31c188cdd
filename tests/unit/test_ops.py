"""Process ops and the dataset split: fitted on train rows, streamed, deterministic."""

import grpc
import numpy as np
import pytest

from cookline import tensors
from cookline.spec import SpecError
from cookline.v1 import data_pb2, pipeline_pb2
from services.common.errors import Fail, status_of
from services.common.splits import assignment as split_assignment
from services.process import ops


def stream(features, labels, batch):
    for lo in range(0, len(labels), batch):
        yield {"features": features[lo : lo + batch], "label": labels[lo : lo + batch]}


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    features = (rng.normal(5, 3, size=(1000, 4)) * [1, 10, 0.1, 1]).astype(np.float32)
    features[:, 3] = 2.0  # a constant column
    return features, np.arange(1000, dtype=np.int32)


def standardize():
    return pipeline_pb2.Op(standardize=pipeline_pb2.StandardizeOp())


def shuffle(buffer, seed=7):
    return pipeline_pb2.Op(shuffle=pipeline_pb2.ShuffleOp(buffer=buffer, seed=seed))


def test_standardize_fits_streaming_moments(data):
    features, labels = data
    fitted, rows = ops.fit([standardize()], stream(features, labels, 37))
    assert rows == 1000
    np.testing.assert_allclose(
        tensors.to_numpy(fitted[0].fitted["mean"]), features.mean(axis=0, dtype=np.float64), rtol=1e-6
    )
    np.testing.assert_allclose(
        tensors.to_numpy(fitted[0].fitted["variance"]), features.astype(np.float64).var(axis=0), rtol=1e-6, atol=1e-9
    )


def test_standardize_applies_the_fit_and_keeps_constant_columns_finite(data):
    features, labels = data
    fitted, _ = ops.fit([standardize()], stream(features, labels, 100))
    out = np.concatenate([b["features"] for b in ops.apply(fitted, stream(features, labels, 64), 0, 50)])
    np.testing.assert_allclose(out[:, :3].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(out[:, :3].std(axis=0), 1, atol=1e-3)
    assert np.all(out[:, 3] == 0)


def test_unfitted_standardize_is_a_failed_precondition(data):
    with pytest.raises(Fail) as info:
        list(ops.apply([standardize()], stream(*data, 10), 0, 10))
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION and "process[0].standardize" in info.value.message


def test_shuffle_is_a_seeded_permutation_that_changes_each_epoch(data):
    features, labels = data

    def order(epoch, seed=7):
        return np.concatenate(
            [b["label"] for b in ops.apply([shuffle(100, seed)], stream(features, labels, 32), epoch, 16)]
        )

    first = order(0)
    assert sorted(first.tolist()) == labels.tolist()  # nothing lost or duplicated
    assert not np.array_equal(first, labels)  # actually shuffled
    np.testing.assert_array_equal(first, order(0))  # deterministic
    assert not np.array_equal(first, order(1))  # new order each epoch
    assert not np.array_equal(first, order(0, seed=8))


def test_shuffle_keeps_rows_together_and_memory_bounded(data):
    features, labels = data
    seen = 0
    for batch in ops.KINDS["shuffle"].apply(shuffle(50), "process[0].shuffle", stream(features, labels, 10), 0, True):
        np.testing.assert_array_equal(batch["features"], features[batch["label"]])
        seen += len(batch["label"])
        assert seen <= 1000
    # the pool never holds more than buffer + one batch: each yield before the end is exactly the excess
    sizes = [
        len(b["label"])
        for b in ops.KINDS["shuffle"].apply(shuffle(50), "process[0].shuffle", stream(features, labels, 10), 0, True)
    ]
    assert max(sizes[:-1]) <= 10 and sizes[-1] == 50


def test_rebatch_gives_exact_batch_sizes():
    batches = [{"label": np.arange(n)} for n in (5, 7, 1, 12)]
    assert [len(b["label"]) for b in ops.rebatch(batches, 8)] == [8, 8, 8, 1]


def test_validate_names_the_op():
    with pytest.raises(SpecError, match=r"process\[1\].shuffle.buffer") as info:
        ops.validate([standardize(), shuffle(-1)])
    assert status_of(info.value)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_split_is_exact_deterministic_and_seeded():
    split = data_pb2.SplitSpec(validation=0.2, test=0.1, seed=7)
    a = split_assignment(150, split)
    assert np.count_nonzero(a == data_pb2.SUBSET_VALIDATION) == 30
    assert np.count_nonzero(a == data_pb2.SUBSET_TEST) == 15
    assert np.count_nonzero(a == data_pb2.SUBSET_TRAIN) == 105
    np.testing.assert_array_equal(a, split_assignment(150, split))
    assert not np.array_equal(a, split_assignment(150, data_pb2.SplitSpec(validation=0.2, test=0.1, seed=8)))
