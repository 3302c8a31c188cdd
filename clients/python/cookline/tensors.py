"""numpy <-> cookline.v1.Tensor codec: the one place tensors are (de)serialised.

Numeric tensors travel as one raw little-endian, C-order buffer (`content`), so
`to_numpy` is a zero-copy `np.frombuffer` view over the protobuf's bytes.
Strings travel as `string_values` and decode to a numpy object array of bytes.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Mapping
from typing import Any, cast

import numpy as np

from cookline.v1 import tensor_pb2

DataType = tensor_pb2.DataType
# Read once: each attribute lookup on a protobuf enum wrapper costs microseconds (per tensor, per batch).
_STRING = DataType.DATA_TYPE_STRING
_UNSPECIFIED = DataType.DATA_TYPE_UNSPECIFIED

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
_LITTLE = sys.byteorder == "little"


# Most elements a decoded tensor may describe (far above any message size limit).
MAX_ELEMENTS = 1 << 40


class TensorError(ValueError):
    """A tensor that cannot be encoded or decoded; the message says why."""


def dtype_name(code: int) -> str:
    """'float32' for DATA_TYPE_FLOAT32 and so on (for error messages)."""
    return DataType.Name(code).removeprefix("DATA_TYPE_").lower() if code in DataType.values() else str(code)


def numpy_dtype(code: int) -> np.dtype:
    """The numpy dtype a DataType decodes to (object for strings)."""
    if code == _STRING:
        return np.dtype(object)
    try:
        return _TO_NUMPY[code]
    except KeyError:
        raise TensorError(f"unsupported dtype {dtype_name(code)}") from None


def data_type(dtype: np.dtype) -> DataType:
    """The DataType enum value of a numpy dtype."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return _STRING
    try:
        return cast("DataType", _FROM_KIND[(dtype.kind, dtype.itemsize)])  # an int of the enum
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
    if tensor.dtype == _STRING:
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
    if tensor.dtype == _STRING:
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


# --- pre-encoded messages (the data plane's copy-avoiding path) ------------------------
#
# Protobuf's Python API copies a tensor's bytes twice on the way out (into `content`,
# then into the serialized message). The data plane instead writes the wire format of
# a TensorBatch directly: small headers plus the arrays' own memory, joined once. The
# bytes are exactly what TensorBatch.SerializeToString() would give (field order aside),
# so every receiver parses them with the generated classes as usual.


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, payload_len: int) -> bytes:
    """Tag and length of a length-delimited field."""
    return _varint(number << 3 | 2) + _varint(payload_len)


@functools.lru_cache(maxsize=1024)
def _entry_head(name: str, code: int, shape: tuple[int, ...], nbytes: int) -> bytes:
    """Wire format of a TensorBatch map entry up to its tensor's content: entry tag and length, key,
    tensor tag and length, dtype, shape and the content's tag and length. The same for every batch
    of one shape, so built once (a stream's batches share their shape, bar the last)."""
    head = b"\x08" + _varint(code)
    if shape:
        dims = b"".join(_varint(d) for d in shape)
        head += _field(2, len(dims)) + dims
    if nbytes:
        head += _field(3, nbytes)
    key = name.encode()
    tensor_len = len(head) + nbytes
    entry = _field(1, len(key)) + key + _field(2, tensor_len)
    return _field(1, len(entry) + tensor_len) + entry + head


def _entry_parts(name: str, array) -> list:
    """Wire-format pieces of one map entry of a TensorBatch: headers, and a numeric tensor's own memory."""
    array = np.asarray(array)
    dtype = array.dtype
    if dtype.kind in "OSU":
        values = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
        body = [b"\x08" + _varint(_STRING)]
        if array.shape:
            dims = b"".join(_varint(int(d)) for d in array.shape)
            body.append(_field(2, len(dims)) + dims)
        body += [_field(4, len(v)) + v for v in values]
        tensor_len = sum(len(p) for p in body)
        key = name.encode()
        entry = _field(1, len(key)) + key + _field(2, tensor_len)
        return [_field(1, len(entry) + tensor_len) + entry, *body]
    code = data_type(dtype)
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and not _LITTLE):
        array = array.astype(dtype.newbyteorder("<"))
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    head = _entry_head(name, code, tuple(int(d) for d in array.shape), array.nbytes)
    return [head, array.reshape(-1).data.cast("B")] if array.nbytes else [head]


def encode_batch(arrays: Mapping[str, np.ndarray], sequence: int = 0, field: int | None = 1) -> bytes:
    """Serialized TensorBatch of named arrays, with one copy of the data.

    With `field` set (default 1), the batch is wrapped as that field of an outer message:
    the bytes of e.g. ReadDatasetResponse(batch=...) or ProcessResponse(batch=...).
    """
    parts: list = []
    for name, array in arrays.items():
        parts += _entry_parts(name, array)
    if sequence:
        parts.append(b"\x10" + _varint(sequence))
    if field is not None:
        total = sum(len(p) for p in parts)
        parts.insert(0, _field(field, total))
    return b"".join(parts)


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    byte = view[pos]
    if byte < 0x80:  # the usual case: tags, small lengths and dimensions
        return byte, pos + 1
    result, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = view[pos]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + 1
        shift += 7


def _fields(view: memoryview, start: int, end: int) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of a message's fields; LEN values as (start, end)."""
    pos, found = start, []
    value: Any
    while pos < end:
        key, pos = _read_varint(view, pos)
        wire = key & 7
        if wire == 2:
            length, pos = _read_varint(view, pos)
            value = (pos, pos + length)
            pos += length
        elif wire == 0:
            value, pos = _read_varint(view, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise TensorError(f"unsupported protobuf wire type {wire}")
        found.append((key >> 3, wire, value))
    return found


def _decode_tensor(view: memoryview, start: int, end: int) -> np.ndarray:
    dtype, shape, strings = _UNSPECIFIED, [], []
    content: tuple[int, int] | None = None
    for number, wire, value in _fields(view, start, end):
        if number == 1 and wire == 0:
            dtype = value
        elif number == 2 and wire == 2:  # packed dims
            pos, stop = value
            while pos < stop:
                dim, pos = _read_varint(view, pos)
                shape.append(dim)
        elif number == 2 and wire == 0:
            shape.append(value)
        elif number == 3 and wire == 2:
            content = value
        elif number == 4 and wire == 2:
            strings.append(bytes(view[value[0] : value[1]]))
    if dtype == _STRING:
        tensor = tensor_pb2.Tensor(dtype=dtype, shape=shape)
        tensor.string_values[:] = strings
        return to_numpy(tensor)
    count = math.prod(shape)  # exact: a huge (or negative, as a varint) dimension fails the size check below
    np_dtype = numpy_dtype(dtype)
    size = 0 if content is None else content[1] - content[0]
    if size != count * np_dtype.itemsize:
        raise TensorError(f"shape {shape} of {dtype_name(dtype)} needs {count * np_dtype.itemsize} bytes, got {size}")
    if count == 0:
        return np.empty(shape, dtype=np_dtype)
    assert content is not None  # size matched a non-empty tensor
    return np.frombuffer(view, dtype=np_dtype, count=count, offset=content[0]).reshape(shape)


def decode_batch(data, field: int | None = 1) -> tuple[dict[str, np.ndarray], int]:
    """(arrays, sequence) of a serialized TensorBatch, numeric tensors as views of `data` (no copy).

    With `field` set (default 1), `data` is an outer message holding the batch as that field,
    e.g. the bytes of a ReadDatasetResponse or ProcessResponse read with no deserializer.
    """
    view = memoryview(data).cast("B")
    start, end = 0, len(view)
    if field is not None:
        start, end = next((v for n, w, v in _fields(view, 0, len(view)) if n == field and w == 2), (0, 0))
    arrays, sequence = {}, 0
    for number, wire, value in _fields(view, start, end):
        if number == 1 and wire == 2:
            name, tensor = "", None
            for n, w, v in _fields(view, *value):
                if n == 1 and w == 2:
                    name = bytes(view[v[0] : v[1]]).decode()
                elif n == 2 and w == 2:
                    tensor = v
            arrays[name] = _decode_tensor(view, *tensor) if tensor else to_numpy(tensor_pb2.Tensor())
        elif number == 2 and wire == 0:
            sequence = value
    return arrays, sequence
