"""Tensor codec: round trips for every dtype and shape, zero-copy decode, clear errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cookline import tensors
from cookline.v1 import tensor_pb2

NUMERIC = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(NUMERIC).flatmap(lambda dt: hnp.arrays(np.dtype(dt), shapes)))
def test_numeric_round_trip(array):
    wire = tensor_pb2.Tensor.FromString(tensors.from_numpy(array).SerializeToString())
    back = tensors.to_numpy(wire)
    assert back.dtype == array.dtype.newbyteorder("<") or back.dtype == array.dtype
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)  # NaN == NaN here, bit patterns kept


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(object, shapes, elements=st.binary(max_size=20)))
def test_string_round_trip(array):
    back = tensors.to_numpy(tensors.from_numpy(array))
    assert back.shape == array.shape
    assert back.reshape(-1).tolist() == array.reshape(-1).tolist()


def test_unicode_strings_are_utf8_bytes():
    back = tensors.to_numpy(tensors.from_numpy(np.array(["iris", "çà"])))
    assert back.tolist() == [b"iris", "çà".encode()]


def test_decode_is_a_view_of_the_message_bytes():
    tensor = tensors.from_numpy(np.arange(1000, dtype=np.float32))
    array = tensors.to_numpy(tensor)
    assert not array.flags.owndata and not array.flags.writeable
    assert isinstance(array.base, (bytes, memoryview)) or array.base is not None


def test_big_endian_input_is_sent_little_endian():
    tensor = tensors.from_numpy(np.array([1.0, 2.0], dtype=">f4"))
    assert tensor.content == np.array([1.0, 2.0], dtype="<f4").tobytes()
    assert tensor.dtype == tensor_pb2.DATA_TYPE_FLOAT32


def test_scalar_and_empty_shapes():
    assert list(tensors.from_numpy(np.float64(3.5)).shape) == []
    assert tensors.to_numpy(tensors.from_numpy(np.float64(3.5))) == 3.5
    empty = tensors.to_numpy(tensors.from_numpy(np.zeros((0, 4), np.int32)))
    assert empty.shape == (0, 4) and empty.dtype == np.int32


@pytest.mark.parametrize(
    "tensor, message",
    [
        (
            tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_FLOAT32, shape=[2, 2], content=b"\0" * 12),
            "needs 16 bytes, got 12",
        ),
        (tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_UNSPECIFIED, shape=[1]), "unsupported dtype"),
        (tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_INT32, shape=[-1], content=b""), "negative dimension"),
        (tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_STRING, shape=[3], string_values=[b"a"]), "needs 3 strings"),
    ],
)
def test_malformed_tensors_are_rejected(tensor, message):
    with pytest.raises(tensors.TensorError, match=message):
        tensors.to_numpy(tensor)


def test_batch_round_trip():
    arrays = {"features": np.ones((3, 4), np.float32), "label": np.array([0, 1, 2], np.int32)}
    batch = tensors.batch_from_numpy(arrays, sequence=7)
    assert batch.sequence == 7
    back = tensors.batch_to_numpy(tensor_pb2.TensorBatch.FromString(batch.SerializeToString()))
    for name in arrays:
        np.testing.assert_array_equal(back[name], arrays[name])


def test_encode_batch_is_the_wire_format_of_the_generated_messages():
    from cookline.v1 import collect_pb2

    arrays = {
        "features": np.arange(12, dtype=np.float32).reshape(3, 4),
        "label": np.array([1, 0, 2], np.int32),
        "text": np.array([b"a", b"", "\u00e9".encode()], dtype=object),
        "empty": np.zeros((3, 0), np.uint8),
        "big": np.arange(3 * 70000, dtype=np.int64).reshape(3, 70000),
    }
    for sequence in (0, 1, 300):
        outer = collect_pb2.ReadDatasetResponse.FromString(tensors.encode_batch(arrays, sequence))
        bare = tensors.tensor_pb2.TensorBatch.FromString(tensors.encode_batch(arrays, sequence, field=None))
        expected = tensors.batch_from_numpy(arrays, sequence)
        assert outer.batch == expected and bare == expected


def test_decode_batch_views_the_bytes_of_any_encoder():
    arrays = {
        "features": np.arange(12, dtype=np.float32).reshape(3, 4),
        "label": np.array([1, 0, 2], np.int32),
        "text": np.array([b"a", b"", b"xyz"], dtype=object),
        "empty": np.zeros((3, 0), np.uint8),
        "scalarish": np.arange(3, dtype=np.int64),
    }
    from cookline.v1 import process_pb2

    for data in (
        tensors.encode_batch(arrays, 7),
        process_pb2.ProcessResponse(batch=tensors.batch_from_numpy(arrays, 7)).SerializeToString(),
    ):
        decoded, sequence = tensors.decode_batch(data)
        assert sequence == 7 and set(decoded) == set(arrays)
        for name, array in arrays.items():
            np.testing.assert_array_equal(decoded[name], array)
        assert not decoded["features"].flags.writeable  # a view of the message, not a copy
