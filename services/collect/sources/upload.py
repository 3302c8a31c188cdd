"""Uploads: TensorBatches (UploadSpool) or a source's files (FileSpool) streamed by a client,
spooled to local disk first, within one budget for every upload in flight (SpoolBudget).

Each batch is checked against the first (names, dtypes, per-row shapes) as it
arrives and appended to a spool folder, and the content hash is computed on
the way, so the version is known before anything is written to the store. A
string "label" tensor names its classes; an int one uses the given class names
(or "0", "1", ...).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

import grpc
import numpy as np

from cookline import tensors
from services.collect.ingest import check_like, schema_of
from services.collect.sources.base import Chunk, Labels, Source
from services.common.errors import Fail, invalid

# Takes n more bytes of the spool budget for one upload (SpoolBudget.account); RESOURCE_EXHAUSTED past it.
Take = Callable[[int], None]


class SpoolBudget:
    """The bytes the uploads in flight in this collect process have spooled, held under one limit
    (COOKLINE_UPLOAD_SPOOL_MB): they share one scratch disk, and an upload spools in full before
    anything of it is checked as a dataset, so without a limit a few large uploads fill the disk."""

    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.used = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def account(self) -> Iterator[Take]:
        """One upload's account: yields its `take`; what it took is given back when it ends."""
        taken = 0

        def take(n: int) -> None:
            nonlocal taken
            with self._lock:
                if self.used + n > self.limit:
                    raise Fail(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"upload: the uploads in flight would spool more than COOKLINE_UPLOAD_SPOOL_MB "
                        f"({self.limit >> 20} MB) on collect's scratch disk; upload again when others "
                        "have finished, or raise the setting",
                    )
                self.used += n
                taken += n

        try:
            yield take
        finally:
            with self._lock:
                self.used -= taken


@contextlib.contextmanager
def _disk_full_is_exhausted() -> Iterator[None]:
    """A full scratch disk ends the upload RESOURCE_EXHAUSTED (not INTERNAL): the client may retry later."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise Fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "upload: collect's scratch disk is full") from None


class UploadSpool(Source):
    format = "upload"

    def __init__(self, folder: str, class_names: list[str], take: Take):
        self.folder = folder
        self.take = take
        self.count = 0
        self.rows = 0
        self.digest = hashlib.sha256(b"upload\0" + "\0".join(class_names).encode() + b"\0")
        self.schema: dict | None = None
        self.labels = Labels(class_names)
        self.fixed_classes = bool(class_names)
        self.class_names = self.labels.names
        self.image_shapes = {}
        self._max_label = -1

    def add(self, batch, index: int) -> None:
        where = f"upload batch {index} (sequence {batch.sequence})"
        try:
            arrays = tensors.batch_to_numpy(batch)
        except tensors.TensorError as exc:
            raise invalid(f"{where}: {exc}") from None
        if not arrays:
            return
        for name, array in arrays.items():
            if name == "subset" or not name:
                raise invalid(f"{where}: tensor name {name!r} is reserved")
            if array.ndim == 0:
                raise invalid(f"{where}: tensor {name!r} is a scalar; every tensor needs a row dimension")
        if "label" not in arrays:
            raise invalid(f"{where}: tensor 'label' is required (class ids or class names per row)")
        if arrays["label"].ndim != 1:
            raise invalid(f"{where}: tensor 'label' has shape {list(arrays['label'].shape)}, expected [rows]")
        if arrays["label"].dtype.kind not in "iuO":
            raise invalid(f"{where}: tensor 'label' has dtype {arrays['label'].dtype}, expected ints or strings")
        arrays = {k: (v.astype(np.str_) if v.dtype == object else v) for k, v in arrays.items()}
        arrays = {
            k: (np.char.decode(v.astype(np.bytes_), "utf-8") if v.dtype.kind == "S" else v) for k, v in arrays.items()
        }
        schema = schema_of(arrays)
        if self.schema is None:
            self.schema = schema
        else:
            check_like(self.schema, schema, where)
        rows = {len(a) for a in arrays.values()}
        if len(rows) != 1:
            raise invalid(
                f"{where}: tensors differ in their number of rows: "
                + ", ".join(f"{k}: {len(v)}" for k, v in sorted(arrays.items()))
            )
        for name in sorted(arrays):
            a = np.ascontiguousarray(arrays[name])
            self.digest.update(f"{name}\0{a.dtype.kind}\0{a.shape[1:]}\0".encode())
            self.digest.update(a.tobytes() if a.dtype.kind != "U" else "\0".join(a.reshape(-1).tolist()).encode())
        self.take(sum(a.nbytes for a in arrays.values()))
        with _disk_full_is_exhausted(), open(os.path.join(self.folder, f"{self.count:08d}.npz"), "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
        self.count += 1
        self.rows += rows.pop()

    def version(self) -> str:
        return self.digest.hexdigest()[:16]

    def files(self):
        return []

    def chunks(self) -> Iterator[Chunk]:
        for i in range(self.count):
            with np.load(os.path.join(self.folder, f"{i:08d}.npz")) as npz:
                chunk = {k: npz[k] for k in npz.files}
            label = chunk["label"]
            if label.dtype.kind == "U":
                chunk["label"] = np.fromiter((self.labels.id(v) for v in label.tolist()), np.int32, len(label))
            else:
                if len(label) and label.min() < 0:
                    raise invalid(f"upload batch {i}: label {int(label.min())} is negative")
                if self.fixed_classes and len(label) and label.max() >= len(self.class_names):
                    raise invalid(
                        f"upload batch {i}: label {int(label.max())} has no class name ({len(self.class_names)} given)"
                    )
                if len(label):
                    self._max_label = max(self._max_label, int(label.max()))
                chunk["label"] = label.astype(np.int32)
            yield chunk
        if not self.class_names:
            self.class_names[:] = [str(i) for i in range(self._max_label + 1)]


class FileSpool:
    """The files of an uploaded source, written under `folder` as they arrive.

    Paths are checked before anything is written: relative, '/'-separated, no '..', no empty
    or hidden parts, so an upload cannot write outside its spool. The pieces of a file come
    one after another; a path seen again after another file began is an error.
    """

    def __init__(self, folder: str, take: Take):
        self.folder = folder
        self.take = take
        self.files: list[str] = []
        self.bytes = 0
        self._current: str | None = None
        self._out: BinaryIO | None = None

    def add(self, chunk, index: int) -> None:
        path = chunk.path
        parts = path.split("/")
        if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
            raise invalid(
                f"upload message {index}: file.path {path!r} must be a relative '/'-separated path "
                "without '.', '..' or empty parts"
            )
        if path != self._current:
            if path in self.files:
                raise invalid(
                    f"upload message {index}: file.path {path!r} came again after another file; "
                    "send each file's pieces one after another"
                )
            self.close()
            full = os.path.join(self.folder, *parts)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            self._out = open(full, "xb")  # closed in close()
            self._current = path
            self.files.append(path)
        assert self._out is not None  # opened above for this path
        self.take(len(chunk.data))
        with _disk_full_is_exhausted():
            self._out.write(chunk.data)
        self.bytes += len(chunk.data)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def path(self, fmt: str) -> str:
        """What the format's source reads: the one file of a csv, text-csv or npz upload, else the folder."""
        self.close()
        if not self.files:
            raise invalid("upload: no files (no message carried a file piece)")
        if fmt in ("csv", "text-csv", "npz"):
            if len(self.files) != 1:
                raise invalid(
                    f"upload: format {fmt} takes one file, got {len(self.files)} "
                    f"({', '.join(self.files[:3])}{', ...' if len(self.files) > 3 else ''})"
                )
            return os.path.join(self.folder, *self.files[0].split("/"))
        return self.folder
