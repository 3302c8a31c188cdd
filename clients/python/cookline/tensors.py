"""numpy <-> cookline.v1.Tensor codec: the one place tensors are (de)serialised.

Numeric tensors travel as one raw little-endian, C-order buffer (`content`), so
`to_numpy` is a zero-copy `np.frombuffer` view over the protobuf's bytes.
Strings travel as `string_values` and decode to a numpy object array of bytes.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from cookline.v1 import tensor_pb2

DataType = tensor_pb2.DataType

# dtype enum <-> little-endian numpy dtype. Strings are handled apart.
_TO_NUMPY: dict[int, np.dtype] = {
    DataType.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    DataType.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    DataType.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    DataType.DATA_TYPE_INT8: np.dtype("i1"),
    DataType.DATA_TYPE_INT16: np.dtype("<i2"),
    DataType.DATA_TYPE_INT32: np.dtype("<i4"),
    DataType.DATA_TYPE_INT64: np.dtype("<i8"),
    DataType.DATA_TYPE_UINT8: np.dtype("u1"),
    DataType.DATA_TYPE_BOOL: np.dtype("?"),
}
_FROM_KIND = {(dt.kind, dt.itemsize): code for code, dt in _TO_NUMPY.items()}


# Most elements a decoded tensor may describe (far above any message size limit).
MAX_ELEMENTS = 1 << 40


class TensorError(ValueError):
    """A tensor that cannot be encoded or decoded; the message says why."""


def dtype_name(code: int) -> str:
    """'float32' for DATA_TYPE_FLOAT32 and so on (for error messages)."""
    return DataType.Name(code).removeprefix("DATA_TYPE_").lower() if code in DataType.values() else str(code)


def numpy_dtype(code: int) -> np.dtype:
    """The numpy dtype a DataType decodes to (object for strings)."""
    if code == DataType.DATA_TYPE_STRING:
        return np.dtype(object)
    try:
        return _TO_NUMPY[code]
    except KeyError:
        raise TensorError(f"unsupported dtype {dtype_name(code)}") from None


def data_type(dtype: np.dtype) -> int:
    """The DataType enum value of a numpy dtype."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return DataType.DATA_TYPE_STRING
    try:
        return _FROM_KIND[(dtype.kind, dtype.itemsize)]
    except KeyError:
        raise TensorError(f"unsupported numpy dtype {dtype}") from None


def from_numpy(array, out: tensor_pb2.Tensor | None = None) -> tensor_pb2.Tensor:
    """Encodes an array (or anything np.asarray takes) as a Tensor.

    Pass `out` to fill a tensor in place (e.g. a map entry of a TensorBatch).
    """
    array = np.asarray(array)
    tensor = tensor_pb2.Tensor() if out is None else out
    tensor.dtype = data_type(array.dtype)
    tensor.shape[:] = array.shape
    if tensor.dtype == DataType.DATA_TYPE_STRING:
        tensor.string_values[:] = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
    else:
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        # tobytes() is the one copy an encode needs (protobuf owns its bytes).
        tensor.content = np.ascontiguousarray(little).tobytes()
    return tensor


def to_numpy(tensor: tensor_pb2.Tensor) -> np.ndarray:
    """Decodes a Tensor. Numeric tensors are read-only views of its bytes (no copy)."""
    shape = tuple(tensor.shape)
    if any(d < 0 for d in shape):
        raise TensorError(f"negative dimension in shape {list(shape)}")
    # Python ints cannot overflow; bound the product of the non-zero dimensions too, so an
    # empty tensor cannot claim dimensions numpy could not even describe.
    if math.prod(d for d in shape if d) > MAX_ELEMENTS:
        raise TensorError(f"shape {list(shape)} is too large (more than {MAX_ELEMENTS} elements)")
    count = math.prod(shape)
    dtype = numpy_dtype(tensor.dtype)
    if tensor.dtype == DataType.DATA_TYPE_STRING:
        if len(tensor.string_values) != count:
            raise TensorError(f"shape {list(shape)} needs {count} strings, got {len(tensor.string_values)}")
        values = np.empty(count, dtype=object)
        values[:] = list(tensor.string_values)
        return values.reshape(shape)
    if len(tensor.content) != count * dtype.itemsize:
        raise TensorError(
            f"shape {list(shape)} of {dtype_name(tensor.dtype)} needs {count * dtype.itemsize} bytes, "
            f"got {len(tensor.content)}"
        )
    return np.frombuffer(tensor.content, dtype=dtype, count=count).reshape(shape)


def batch_from_numpy(arrays: Mapping[str, np.ndarray], sequence: int = 0, out=None) -> tensor_pb2.TensorBatch:
    """Encodes named arrays that share their row count as a TensorBatch."""
    batch = tensor_pb2.TensorBatch() if out is None else out
    batch.sequence = sequence
    for name, array in arrays.items():
        from_numpy(array, out=batch.tensors[name])
    return batch


def batch_to_numpy(batch: tensor_pb2.TensorBatch) -> dict[str, np.ndarray]:
    """Decodes every tensor of a TensorBatch (zero-copy for numeric tensors)."""
    return {name: to_numpy(t) for name, t in batch.tensors.items()}
