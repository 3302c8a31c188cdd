"""npz source: a numpy .npz archive of named arrays that share their first dimension.

Each array becomes the tensor of the same name. The label array (collect.label,
default "label") may hold integers (class ids, named "0", "1", ...) or strings
(class names, ids in order of first appearance). Arrays are streamed from the
archive in row chunks, so a file larger than memory never is held whole.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator

import numpy as np

from services.collect.sources.base import Chunk, Labels, Source, open_binary, single_file
from services.common.errors import invalid

CHUNK_BYTES = 16 << 20
TENSOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
RESERVED = {"subset"}


def _read_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of a .npy stream, leaving it at the first value."""
    major, _minor = np.lib.format.read_magic(f)
    if major == 1:
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


class NpzSource(Source):
    format = "npz"

    def __init__(self, spec, path: str):
        self.path = single_file(path, "npz")
        self.file_name = os.path.basename(self.path)
        self.label = spec.label or "label"
        try:
            self.zip = zipfile.ZipFile(open_binary(self.path))
            members = self.zip.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise invalid(f"collect.source: {self.file_name} is not a .npz archive ({exc})") from None
        self.arrays: dict[str, tuple[str, np.dtype, tuple[int, ...], bool]] = {}
        for member in members:
            name = member[:-4] if member.endswith(".npy") else member
            if not TENSOR_NAME.fullmatch(name) or name in RESERVED:
                raise invalid(
                    f"{self.file_name}: array {name!r} is not a valid tensor name ([A-Za-z_][A-Za-z0-9_]*, "
                    f"not {', '.join(sorted(RESERVED))})"
                )
            with self.zip.open(member) as f:
                try:
                    shape, fortran, dtype = _read_header(f)
                except ValueError as exc:
                    raise invalid(f"{self.file_name}: array {name!r} is not a .npy array ({exc})") from None
            if dtype.hasobject:
                raise invalid(
                    f"{self.file_name}: array {name!r} holds Python objects; use numeric or fixed-width string arrays"
                )
            if not shape:
                raise invalid(f"{self.file_name}: array {name!r} is a scalar; every array needs a row dimension")
            self.arrays[name] = (member, dtype, shape, fortran)
        if not self.arrays:
            raise invalid(f"collect.source: {self.file_name} holds no arrays")
        if self.label not in self.arrays:
            raise invalid(
                f"collect.label: array {self.label!r} is not in {self.file_name} "
                f"(arrays: {', '.join(sorted(self.arrays))})"
            )
        rows = {name: a[2][0] for name, a in self.arrays.items()}
        if len(set(rows.values())) != 1:
            raise invalid(
                f"{self.file_name}: arrays differ in their number of rows: "
                + ", ".join(f"{k}: {v}" for k, v in sorted(rows.items()))
            )
        self.num_rows = next(iter(rows.values()))
        if self.num_rows == 0:
            raise invalid(f"collect.source: {self.file_name} has no rows")
        label_dtype = self.arrays[self.label][1]
        if len(self.arrays[self.label][2]) != 1 or label_dtype.kind not in "iuSU":
            raise invalid(
                f"{self.file_name}: label array {self.label!r} must be 1-d integers or strings, "
                f"got {label_dtype} {list(self.arrays[self.label][2])}"
            )
        self.labels = Labels()
        self.class_names = self.labels.names
        self.image_shapes = {}
        self._max_label = -1

    def files(self):
        return [(self.file_name, self.path)]

    def chunks(self) -> Iterator[Chunk]:
        row_bytes = sum(int(np.prod(a[2][1:], dtype=np.int64)) * a[1].itemsize for a in self.arrays.values())
        chunk_rows = max(1, CHUNK_BYTES // max(row_bytes, 1))
        streams = {}
        try:
            for name, (member, _dtype, shape, fortran) in self.arrays.items():
                if fortran and len(shape) > 1:
                    raise invalid(f"{self.file_name}: array {name!r} is in Fortran order; save it C-ordered")
                f = self.zip.open(member)
                _read_header(f)
                streams[name] = f
            for lo in range(0, self.num_rows, chunk_rows):
                n = min(chunk_rows, self.num_rows - lo)
                chunk = {}
                for name, (_member, dtype, shape, _) in self.arrays.items():
                    count = n * int(np.prod(shape[1:], dtype=np.int64))
                    data = streams[name].read(count * dtype.itemsize)
                    chunk[name] = np.frombuffer(data, dtype=dtype).reshape((n,) + tuple(shape[1:]))
                chunk["label"] = self._label_ids(chunk.pop(self.label), lo)
                yield chunk
        finally:
            for f in streams.values():
                f.close()
        self.class_names[:] = self.class_names or [str(i) for i in range(self._max_label + 1)]

    def _label_ids(self, labels: np.ndarray, first_row: int) -> np.ndarray:
        if labels.dtype.kind in "SU":
            as_text = labels.astype(np.str_)
            return np.fromiter((self.labels.id(str(v)) for v in as_text), dtype=np.int32, count=len(labels))
        if labels.size and labels.min() < 0:
            row = first_row + int(np.argmin(labels))
            raise invalid(f"{self.file_name}: label array {self.label!r} row {row}: {labels.min()} is negative")
        if labels.size:
            self._max_label = max(self._max_label, int(labels.max()))
        return labels.astype(np.int32)
