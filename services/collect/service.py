"""CollectService: sources -> immutable, sharded, content-addressed dataset versions;
dataset versions -> streams of TensorBatch."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from typing import Iterator

import grpc
import numpy as np
from google.protobuf import json_format

from cookline import tensors
from cookline.v1 import collect_pb2, collect_pb2_grpc, data_pb2
from services.common import layout, splits
from services.common.errors import Fail, invalid, rpc
from services.common.store import ObjectStore
from services.collect.csv_source import CsvSource

log = logging.getLogger("cookline.collect")

FORMATS = ("csv",)
DEFAULT_BATCH = 256
MAX_BATCH = 1 << 20


def shard_bytes() -> int:
    """Target size of one shard (COOKLINE_SHARD_MB, default 64)."""
    return int(float(os.environ.get("COOKLINE_SHARD_MB") or 64) * 1024 * 1024)


def content_version(path: str, spec) -> str:
    """Content address of an ingest: sha256 of the source bytes and the options."""
    digest = hashlib.sha256()
    digest.update(f"{spec.format or 'csv'}\0{spec.label}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


class CollectServicer(collect_pb2_grpc.CollectServiceServicer):
    def __init__(self, store: ObjectStore):
        self.store = store

    @rpc
    def Ingest(self, request: collect_pb2.IngestRequest, context) -> Iterator[collect_pb2.IngestResponse]:
        name = layout.check_name("dataset", request.dataset)
        spec = request.source
        fmt = spec.format or "csv"
        if fmt not in FORMATS:
            raise invalid(f"collect.format: {fmt!r} is not supported (supported: {', '.join(FORMATS)})")
        if not spec.source:
            raise invalid("collect.source: required")
        path = spec.source
        if not os.path.isabs(path):
            raise invalid(f"collect.source: {path!r} must be an absolute path on the collect service")
        if not os.path.isfile(path):
            raise Fail(grpc.StatusCode.NOT_FOUND, f"collect.source: file {path!r} not found")

        version = content_version(path, spec)
        prefix = layout.dataset_prefix(name, version)
        if self.store.is_published(prefix, layout.DATASET_MANIFEST):
            manifest = json.loads(self.store.get_bytes(prefix + layout.DATASET_MANIFEST))
            log.info("dataset %s@%s exists; reused", name, version)
            yield collect_pb2.IngestResponse(
                rows_read=manifest["num_rows"], shards_written=manifest["num_shards"],
                dataset=layout.dataset_info(manifest), reused=True)
            return

        source = CsvSource(path, spec.label, chunk_rows=4096)  # validates header and label first
        rows_per_shard = max(1, shard_bytes() // (4 * len(source.columns) + 4))
        shards, rows, size = [], 0, 0
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        pending_rows = 0
        try:
            for features, labels in source.chunks():
                pending.append((features, labels))
                pending_rows += len(labels)
                rows += len(labels)
                while pending_rows >= rows_per_shard:
                    pending, pending_rows, shard = self._write_shard(prefix, len(shards), pending, rows_per_shard)
                    shards.append(shard)
                    size += shard["bytes"]
                    yield collect_pb2.IngestResponse(rows_read=rows, shards_written=len(shards))
            if pending_rows:
                _, _, shard = self._write_shard(prefix, len(shards), pending, pending_rows)
                shards.append(shard)
                size += shard["bytes"]
            info = data_pb2.DatasetInfo(
                ref=data_pb2.DatasetRef(name=name, version=version),
                num_rows=rows, source=path, format=fmt, num_shards=len(shards), size_bytes=size,
                created_at=layout.now(),
                fields=[
                    data_pb2.FieldSchema(name="features", dtype=tensors.DataType.DATA_TYPE_FLOAT32,
                                         shape=[len(source.columns)], columns=source.columns),
                    data_pb2.FieldSchema(name="label", dtype=tensors.DataType.DATA_TYPE_INT32,
                                         class_names=source.class_names),
                ],
            )
            manifest = json_format.MessageToDict(info, preserving_proto_field_name=True)
            manifest["num_rows"], manifest["num_shards"], manifest["size_bytes"] = rows, len(shards), size
            manifest["shards"] = shards
            # The manifest is written last: only now does the version exist.
            self.store.publish(prefix, {}, layout.DATASET_MANIFEST, json.dumps(manifest, indent=1).encode())
        except BaseException:
            self.store.delete_prefix(prefix)  # nothing half-written stays behind
            raise
        log.info("dataset %s@%s published: %d rows, %d shards", name, version, rows, len(shards))
        yield collect_pb2.IngestResponse(rows_read=rows, shards_written=len(shards), dataset=info)

    def _write_shard(self, prefix, index, pending, take):
        """Writes the first `take` pending rows as one shard; returns the rest."""
        features = np.concatenate([f for f, _ in pending])
        labels = np.concatenate([l for _, l in pending])
        key = f"shard-{index:05d}.npz"
        with tempfile.NamedTemporaryFile(suffix=".npz") as tmp:
            np.savez(tmp, features=features[:take], label=labels[:take])
            tmp.flush()
            self.store.put_file(prefix + key, tmp.name)
            size = os.path.getsize(tmp.name)
        rest = [(features[take:], labels[take:])] if len(labels) > take else []
        return rest, len(labels) - take, {"key": key, "rows": take, "bytes": size}

    @rpc
    def ReadDataset(self, request: collect_pb2.ReadDatasetRequest, context) -> Iterator[collect_pb2.ReadDatasetResponse]:
        manifest = layout.read_manifest(self.store, request.dataset)
        batch_size = request.batch_size or DEFAULT_BATCH
        if not 1 <= batch_size <= MAX_BATCH:
            raise invalid(f"batch_size: {batch_size} is not in [1, {MAX_BATCH}]")
        prefix = layout.dataset_prefix(manifest["ref"]["name"], manifest["ref"]["version"])
        assignment = None
        if request.subset != data_pb2.SUBSET_UNSPECIFIED:
            assignment = splits.assignment(manifest["num_rows"], request.split)
        sequence, start = 0, 0
        carry: dict[str, np.ndarray] | None = None
        for shard in manifest["shards"]:
            with np.load(io.BytesIO(self.store.get_bytes(prefix + shard["key"]))) as npz:
                arrays = {"features": npz["features"], "label": npz["label"]}
            if assignment is not None:
                keep = assignment[start:start + shard["rows"]] == request.subset
                arrays = {k: v[keep] for k, v in arrays.items()}
            start += shard["rows"]
            if carry is not None:
                arrays = {k: np.concatenate([carry[k], v]) for k, v in arrays.items()}
            rows = len(arrays["label"])
            full = rows - rows % batch_size
            for lo in range(0, full, batch_size):
                yield collect_pb2.ReadDatasetResponse(batch=tensors.batch_from_numpy(
                    {k: v[lo:lo + batch_size] for k, v in arrays.items()}, sequence))
                sequence += 1
            carry = {k: v[full:] for k, v in arrays.items()} if full < rows else None
        if carry is not None:
            yield collect_pb2.ReadDatasetResponse(batch=tensors.batch_from_numpy(carry, sequence))

    @rpc
    def GetDataset(self, request: collect_pb2.GetDatasetRequest, context) -> collect_pb2.GetDatasetResponse:
        return collect_pb2.GetDatasetResponse(dataset=layout.dataset_info(layout.read_manifest(self.store, request.dataset)))
