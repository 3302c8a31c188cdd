"""Writing a dataset version: chunks from a source -> bounded shards + statistics -> manifest (last).

`DatasetWriter` checks that every chunk has the tensors, dtypes and per-row
shapes of the first, groups rows into shards of about COOKLINE_SHARD_MB, and
accumulates the statistics; `manifest()` describes what was written. The
caller publishes the manifest with store.publish() and deletes the writer's
own shards (`keys`) on any failure, so nothing half-written is ever visible.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zipfile

import numpy as np
from google.protobuf import json_format

from cookline import config, tensors
from cookline.v1 import data_pb2
from services.collect.stats import StatisticsBuilder
from services.common import layout
from services.common.errors import invalid
from services.common.store import ObjectStore, sha256_file

# Tensors that are stored in shards but are not part of the schema.
HIDDEN = {"subset"}


def _kind(array: np.ndarray) -> str:
    """A dtype description where all string widths are equal."""
    return "string" if array.dtype.kind in "SUO" else tensors.dtype_name(tensors.data_type(array.dtype))


def schema_of(chunk: dict[str, np.ndarray]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor name -> (dtype, per-row shape) of a chunk."""
    return {name: (_kind(a), a.shape[1:]) for name, a in chunk.items()}


def check_like(first: dict, schema: dict, where: str) -> None:
    """INVALID_ARGUMENT naming the tensor when `schema` differs from the `first` chunk's."""
    if schema == first:
        return
    for name in sorted(set(schema) | set(first)):
        if name not in schema:
            raise invalid(f"{where}: tensor {name!r} is missing (earlier batches have it)")
        if name not in first:
            raise invalid(f"{where}: tensor {name!r} is new (earlier batches do not have it)")
        (kind, shape), (first_kind, first_shape) = schema[name], first[name]
        if kind != first_kind:
            raise invalid(f"{where}: tensor {name!r} has dtype {kind}, earlier batches have {first_kind}")
        if shape != first_shape:
            raise invalid(
                f"{where}: tensor {name!r} has per-row shape {list(shape)}, earlier batches have {list(first_shape)}"
            )


class DatasetWriter:
    def __init__(self, store: ObjectStore, prefix: str, what: str = "source", attempt: str = ""):
        self.store, self.prefix, self.what = store, prefix, what
        # Shard names carry the attempt, so two attempts at one version (one of them killed, or
        # abandoned by a gateway that restarted) never write or delete each other's shards.
        self.attempt = attempt
        self.keys: list[str] = []  # every key this writer has put (or started to put)
        self.shard_bytes = config.shard_bytes()
        self.schema: dict[str, tuple[str, tuple[int, ...]]] | None = None
        self.pending: list[dict[str, np.ndarray]] = []
        self.pending_rows = 0
        self.rows_per_shard = 0
        self.rows = 0
        self.size = 0
        self.shards: list[dict] = []
        self.stats = StatisticsBuilder()
        self.first_dtypes: dict[str, np.dtype] = {}

    def add(self, chunk: dict[str, np.ndarray], columns=(), categorical_columns=(), where: str = "") -> int:
        """Adds rows; returns how many shards were written by this call."""
        schema = schema_of(chunk)
        rows = {len(a) for a in chunk.values()}
        if len(rows) != 1:
            raise invalid(
                f"{self.what}{where}: tensors differ in their number of rows: "
                + ", ".join(f"{k}: {len(v)}" for k, v in sorted(chunk.items()))
            )
        if self.schema is None:
            self.schema = schema
            self.first_dtypes = {name: a.dtype for name, a in chunk.items()}
            row_bytes = sum(a[:1].nbytes for a in chunk.values()) or 1
            self.rows_per_shard = max(1, self.shard_bytes // row_bytes)
        else:
            check_like(self.schema, schema, f"{self.what}{where}")
        self.stats.add(chunk, list(columns), list(categorical_columns))
        n = rows.pop()
        self.pending.append(chunk)
        self.pending_rows += n
        self.rows += n
        written = 0
        while self.pending_rows >= self.rows_per_shard:
            self._write(self.rows_per_shard)
            written += 1
        return written

    def _write(self, take: int) -> None:
        """Writes the first `take` pending rows as one shard, streaming the chunks into the
        archive (no concatenated copy); the rest stay pending as views."""
        key = f"shard-{len(self.shards):05d}" + (f"-{self.attempt}" if self.attempt else "") + ".npz"
        fd, tmp = tempfile.mkstemp(suffix=".npz", prefix="cookline-shard-")
        try:
            with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name in self.pending[0]:
                    first = self.pending[0][name]
                    dtype = first.dtype
                    if dtype.kind == "U":  # strings: one width for the whole shard
                        width = max(c[name].dtype.itemsize for c in self.pending) // 4
                        dtype = np.dtype(f"<U{max(width, 1)}")
                    with archive.open(name + ".npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array_header_2_0(
                            member,
                            {
                                "descr": np.lib.format.dtype_to_descr(dtype),
                                "fortran_order": False,
                                "shape": (take,) + first.shape[1:],
                            },
                        )
                        left = take
                        for chunk in self.pending:
                            part = chunk[name][:left]
                            member.write(np.ascontiguousarray(part, dtype=dtype).data)
                            left -= len(part)
                            if left == 0:
                                break
            digest = sha256_file(tmp)  # the file was just written: read from the page cache
            self.keys.append(self.prefix + key)  # before the put: a failed put may leave a partial object
            self.store.put_file(self.prefix + key, tmp)
            size = os.path.getsize(tmp)
        finally:
            os.unlink(tmp)
        # "sha256": what ReadDataset verifies each shard against (docs/api.md, "Storage layout")
        self.shards.append({"key": key, "rows": take, "bytes": size, "sha256": digest})
        self.size += size
        rest, left = [], take
        for chunk in self.pending:
            n = len(next(iter(chunk.values())))
            if left >= n:
                left -= n
                continue
            rest.append({k: v[left:] for k, v in chunk.items()})
            left = 0
        self.pending = rest
        self.pending_rows -= take

    def finish(self) -> None:
        """Writes the last, partial shard."""
        if self.pending_rows:
            self._write(self.pending_rows)

    def fields(self, columns, categorical_columns, class_names, text_columns=()) -> list[data_pb2.FieldSchema]:
        out = []
        # The label last, everything else in the source's order.
        for name, (_kind, shape) in sorted((self.schema or {}).items(), key=lambda item: item[0] == "label"):
            if name in HIDDEN:
                continue
            field = data_pb2.FieldSchema(name=name, dtype=tensors.data_type(self.first_dtypes[name]), shape=shape)
            if name == "features" and len(columns) == (shape[0] if len(shape) == 1 else -1):
                field.columns[:] = columns
            elif name == "categorical":
                field.columns[:] = categorical_columns
            elif name == "text":
                field.columns[:] = text_columns
            elif name in ("label", "box_labels"):  # box_labels: detection data's class ids
                field.class_names[:] = class_names
            out.append(field)
        return out

    def info(
        self,
        ref: data_pb2.DatasetRef,
        source: str,
        fmt: str,
        columns,
        categorical_columns,
        class_names,
        image_shapes,
        text_columns=(),
    ) -> data_pb2.DatasetInfo:
        return data_pb2.DatasetInfo(
            ref=ref,
            num_rows=self.rows,
            source=source,
            format=fmt,
            num_shards=len(self.shards),
            size_bytes=self.size,
            created_at=layout.now(),
            fields=self.fields(columns, categorical_columns, class_names, text_columns),
            statistics=self.stats.build(class_names, image_shapes),
            predefined_split="subset" in (self.schema or {}),
        )


def read_shard(buffer) -> dict[str, np.ndarray]:
    """The arrays of a shard (an .npz written by np.savez, members stored uncompressed) as
    read-only views into `buffer`: no copy. Falls back to np.load for other archives."""
    view = memoryview(buffer)
    try:
        archive = zipfile.ZipFile(_Reader(view))
        arrays = {}
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError("compressed member")
            local = view[info.header_offset : info.header_offset + 30]
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            member = io.BytesIO(view[start : start + min(info.file_size, 4096)])
            major, _ = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(member)
            if fortran or dtype.hasobject:
                raise ValueError("not a C-ordered plain array")
            count = int(np.prod(shape, dtype=np.int64))
            arrays[info.filename.removesuffix(".npy")] = np.frombuffer(
                view, dtype=dtype, count=count, offset=start + member.tell()
            ).reshape(shape)
        return arrays
    except (ValueError, zipfile.BadZipFile, struct.error):
        with np.load(io.BytesIO(bytes(view))) as npz:
            return {k: npz[k] for k in npz.files}


class _Reader(io.RawIOBase):
    """A seekable file over a buffer, without copying it (what zipfile needs to read the directory)."""

    def __init__(self, view: memoryview):
        self.view, self.pos = view, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else len(self.view) + offset
        return self.pos

    def tell(self):
        return self.pos

    def readinto(self, out):
        chunk = self.view[self.pos : self.pos + len(out)]
        out[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


def manifest_bytes(info: data_pb2.DatasetInfo, shards: list[dict]) -> bytes:
    """manifest.json: the DatasetInfo (proto field names) plus the shard list."""
    import json

    manifest = json_format.MessageToDict(info, preserving_proto_field_name=True)
    manifest["num_rows"], manifest["num_shards"], manifest["size_bytes"] = (
        info.num_rows,
        info.num_shards,
        info.size_bytes,
    )
    manifest["shards"] = shards
    return json.dumps(manifest, indent=1).encode()
