"""CollectService: sources -> immutable, sharded, content-addressed dataset versions
with statistics; dataset versions -> streams of TensorBatch."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import itertools
import json
import logging
import os
import secrets
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import cast

import grpc
import numpy as np

from cookline import config, tensors
from cookline.spec import roots
from cookline.spec import sources as spec_sources
from cookline.v1 import collect_pb2, collect_pb2_grpc, data_pb2, pipeline_pb2
from services.collect import stats
from services.collect.ingest import DatasetWriter, manifest_bytes, read_shard

# pyarrow loads when collect starts, not at its first CSV: a fixed cost of the service (about
# 35 MB of RSS), not memory that grows with the data it ingests.
from services.collect.sources import (
    csvread,  # noqa: F401 (imported for its side effect: pyarrow loaded at start)
    open_source,
    s3,
)
from services.collect.sources.base import Source, open_binary
from services.collect.sources.upload import FileSpool, SpoolBudget, UploadSpool
from services.common import layout, partition, splits
from services.common.errors import Fail, invalid, not_found, rpc
from services.common.store import NotFoundError, ObjectStore, StoreError, StoreUnavailableError

log = logging.getLogger("cookline.collect")

DEFAULT_BATCH = 256
MAX_BATCH = 1 << 20
MAX_LIST = 1000


def content_version(source: Source, spec) -> str:
    """Content address of an ingest: sha256 of the format options and every input file (name + bytes)."""
    digest = hashlib.sha256()
    opts = type(spec)()
    opts.CopyFrom(spec)
    opts.source = ""  # the same content at another path is the same version
    opts.format = spec.format or "csv"
    digest.update(opts.SerializeToString(deterministic=True) + b"\0")
    buffer = bytearray(1 << 20)  # one buffer for every file: thousands of small images allocate nothing
    view = memoryview(buffer)
    for name, path in source.files():
        digest.update(name.encode() + b"\0")
        with open_binary(path) as f:
            while n := cast(io.BufferedIOBase, f).readinto(buffer):  # every stream open_binary gives has it
                digest.update(view[:n])
        digest.update(b"\0")
    return digest.hexdigest()[:16]


class CollectServicer(collect_pb2_grpc.CollectServiceServicer):
    def __init__(self, store: ObjectStore):
        self.store = store
        self.live: set[str] = set()  # ingest attempts running in this process
        self.live_lock = threading.Lock()
        self.spool_budget = SpoolBudget(config.upload_spool_bytes())  # shared by every upload in flight

    # --- ingest ----------------------------------------------------------------

    @rpc
    def Ingest(self, request: collect_pb2.IngestRequest, context) -> Iterator[collect_pb2.IngestResponse]:
        name = layout.check_name("dataset", request.dataset)
        spec = request.source
        fmt = spec_sources.source(spec.format).name
        if not spec.source:
            raise invalid("collect.source: required")
        with tempfile.TemporaryDirectory(prefix="cookline-ingest-") as scratch, contextlib.ExitStack() as opened:
            if spec.source.startswith("s3://"):
                path = opened.enter_context(s3.source_path(spec.source, fmt, scratch))
            else:
                path = spec.source
                if not os.path.isabs(path):
                    raise invalid(f"collect.source: {path!r} must be an absolute path on the collect service")
                roots.check(path)  # before anything is opened: PERMISSION_DENIED outside the source roots
                if not os.path.exists(path):
                    raise not_found(f"collect.source: file {path!r} not found")
                roots.check_tree(path)
            source = open_source(spec, path)  # validates header, label, folders first
            version = content_version(source, spec)
            yield from self._ingest(name, version, source, spec.source, fmt, request.strict, context)

    def _ingest(
        self, name, version, source: Source, where: str, fmt: str, strict: bool, context
    ) -> Iterator[collect_pb2.IngestResponse]:
        prefix = layout.dataset_prefix(name, version)
        if self.store.is_published(prefix, layout.DATASET_MANIFEST):
            manifest = json.loads(self.store.get_bytes(prefix + layout.DATASET_MANIFEST))
            info = layout.dataset_info(manifest)
            log.info("dataset %s@%s exists; reused", name, version)
            yield collect_pb2.IngestResponse(
                rows_read=info.num_rows,
                shards_written=info.num_shards,
                dataset=info,
                reused=True,
                anomalies=self._anomalies(info),
            )
            return
        attempt = secrets.token_hex(4)
        writer = DatasetWriter(
            self.store, prefix, what=where if source.format == "upload" else "collect.source", attempt=attempt
        )
        with self.live_lock:
            self.live.add(attempt)
        try:
            yield from self._write(name, version, prefix, writer, source, where, fmt, strict, context)
        finally:
            with self.live_lock:
                self.live.discard(attempt)

    def _write(
        self, name, version, prefix, writer: DatasetWriter, source: Source, where: str, fmt: str, strict: bool, context
    ) -> Iterator[collect_pb2.IngestResponse]:
        try:
            for chunk in source.chunks():
                if writer.add(chunk, source.columns, source.categorical_columns):
                    yield collect_pb2.IngestResponse(rows_read=writer.rows, shards_written=len(writer.shards))
                if not context.is_active():
                    raise Fail(grpc.StatusCode.CANCELLED, "ingest cancelled")
            if writer.rows == 0:
                raise invalid(f"{where}: no rows")
            writer.finish()
            info = writer.info(
                data_pb2.DatasetRef(name=name, version=version),
                where,
                fmt,
                source.columns,
                source.categorical_columns,
                source.class_names,
                source.image_shapes,
                source.text_columns,
            )
            anomalies = self._anomalies(info)
            if strict and anomalies:
                raise Fail(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"dataset {name!r}: {len(anomalies)} schema anomalies against the previous version "
                    f"(strict: true): " + "; ".join(f"{a.field}: {a.message}" for a in anomalies),
                )
            # The manifest is written last: only now does the version exist.
            self.store.publish(prefix, {}, layout.DATASET_MANIFEST, manifest_bytes(info, writer.shards))
        except BaseException as exc:
            try:
                for key in writer.keys:  # nothing half-written stays behind (only this attempt's shards)
                    self.store.delete(key)
            except StoreError:  # the store is gone: the shards stay invisible (no manifest) until swept
                log.warning("could not remove the shards of a failed ingest of %s@%s", name, version)
            if (
                isinstance(exc, StoreError)
                and not isinstance(exc, StoreUnavailableError)
                and self.store.is_published(prefix, layout.DATASET_MANIFEST)
            ):
                # another attempt at the same content published it first: that version is ours too
                yield from self._ingest(name, version, source, where, fmt, strict, context)
                return
            raise
        self._sweep(prefix, writer.shards)
        log.info(
            "dataset %s@%s published: %d rows, %d shards, %d anomalies",
            name,
            version,
            writer.rows,
            len(writer.shards),
            len(anomalies),
        )
        yield collect_pb2.IngestResponse(
            rows_read=writer.rows, shards_written=len(writer.shards), dataset=info, anomalies=anomalies
        )

    def _sweep(self, prefix: str, shards: list[dict]) -> None:
        """Deletes the shards that dead attempts at this version left (collect was killed mid-ingest).

        Only the attempt that published runs this: the manifest is written create-only, so of two
        attempts at one version (in this process or in another collect replica) exactly one
        publishes, and the other deletes its own shards and answers with the published version.
        Shards of a losing attempt still being written elsewhere may be swept here; that attempt
        fails to publish anyway. Attempts still running in this process are left alone.
        """
        keep = {prefix + layout.DATASET_MANIFEST} | {prefix + shard["key"] for shard in shards}
        with self.live_lock:
            live = set(self.live)
        for key in self.store.list(prefix):
            attempt = key.rsplit("/", 1)[-1].removesuffix(".npz").rsplit("-", 1)[-1]
            if key not in keep and attempt not in live:
                log.info("removing %s, left by an unfinished ingest", key)
                self.store.delete(key)

    def _anomalies(self, info: data_pb2.DatasetInfo) -> list[data_pb2.SchemaAnomaly]:
        """Anomalies of `info` against the newest other published version of the same name."""
        previous = [d for d in self._versions(info.ref.name) if d.ref.version != info.ref.version]
        return stats.anomalies(previous[0], info) if previous else []

    @rpc
    def UploadDataset(self, request_iterator, context) -> collect_pb2.UploadDatasetResponse:
        # the budget given back after the spool is deleted
        with self.spool_budget.account() as take, tempfile.TemporaryDirectory(prefix="cookline-upload-") as scratch:
            spool = None
            name = ""
            for index, message in enumerate(request_iterator):
                if spool is None:
                    name = layout.check_name("dataset", message.dataset)
                    if message.HasField("source"):
                        return self._upload_files(name, message, request_iterator, scratch, take, context)
                    spool = UploadSpool(scratch, list(message.class_names), take)
                if message.HasField("file"):
                    raise invalid(
                        f"upload message {index}: file: a tensor upload (no source in the first "
                        "message) carries batches, not files"
                    )
                if message.HasField("batch"):
                    spool.add(message.batch, index)
            if not context.is_active():  # the stream broke off: publish nothing
                raise Fail(grpc.StatusCode.CANCELLED, "upload cancelled")
            if spool is None:
                raise invalid("dataset: required in the first message (the stream was empty)")
            if spool.rows == 0:
                raise invalid(f"upload of {name!r}: no rows (no batch carried any)")
            last = _final(self._ingest(name, spool.version(), spool, "upload", "upload", False, context))
        return collect_pb2.UploadDatasetResponse(dataset=last.dataset, reused=last.reused)

    def _upload_files(self, name, first, request_iterator, scratch, take, context) -> collect_pb2.UploadDatasetResponse:
        """A source's files uploaded (UploadDataset with `source`): spooled, then ingested as the same
        files on this machine would be, so the version is the one an Ingest of them gets."""
        spec = pipeline_pb2.CollectSpec()
        spec.CopyFrom(first.source)
        fmt = spec_sources.source(spec.format).name
        if spec.dataset:
            raise invalid("source.dataset: must be empty in an upload (the upload makes the dataset)")
        files = FileSpool(os.path.join(scratch, "files"), take)
        os.makedirs(files.folder)
        for index, message in enumerate(itertools.chain([first], request_iterator)):
            if message.HasField("batch"):
                raise invalid(
                    f"upload message {index}: batch: a file upload (source in the first message) "
                    "carries files, not batches"
                )
            if message.HasField("file"):
                files.add(message.file, index)
        if not context.is_active():  # the stream broke off: publish nothing
            raise Fail(grpc.StatusCode.CANCELLED, "upload cancelled")
        path = files.path(fmt)
        where = f"upload:{files.files[0] if len(files.files) == 1 else name}"
        spec.source = where
        source = open_source(spec, path)
        version = content_version(source, spec)
        last = _final(self._ingest(name, version, source, where, fmt, False, context))
        log.info("upload of %s: %d files, %d bytes -> %s@%s", name, len(files.files), files.bytes, name, version)
        return collect_pb2.UploadDatasetResponse(dataset=last.dataset, reused=last.reused)

    # --- catalog ---------------------------------------------------------------

    def _versions(self, name: str) -> list[data_pb2.DatasetInfo]:
        """Published versions of one dataset, newest first."""
        found = []
        for version in self.store.list_dirs(f"datasets/{name}/"):
            try:
                manifest = json.loads(
                    self.store.get_bytes(layout.dataset_prefix(name, version) + layout.DATASET_MANIFEST)
                )
            except NotFoundError:
                continue  # unpublished: invisible
            found.append(layout.dataset_info(manifest))
        return sorted(found, key=lambda d: d.created_at, reverse=True)

    @rpc
    def GetDataset(self, request: collect_pb2.GetDatasetRequest, context) -> collect_pb2.GetDatasetResponse:
        return collect_pb2.GetDatasetResponse(
            dataset=layout.dataset_info(layout.read_manifest(self.store, request.dataset))
        )

    @rpc
    def ListDatasets(self, request: collect_pb2.ListDatasetsRequest, context) -> collect_pb2.ListDatasetsResponse:
        limit = request.limit or 100
        if not 1 <= limit <= MAX_LIST:
            raise invalid(f"limit: {limit} is not in [1, {MAX_LIST}]")
        if request.name:
            names = [layout.check_name("name", request.name)]
        else:
            names = self.store.list_dirs("datasets/")
        found = [info for n in names for info in self._versions(n)]
        found.sort(key=lambda d: d.created_at, reverse=True)
        return collect_pb2.ListDatasetsResponse(datasets=found[:limit])

    # --- reading ---------------------------------------------------------------

    @rpc
    def ReadDataset(
        self, request: collect_pb2.ReadDatasetRequest, context
    ) -> Iterator[bytes]:  # pre-encoded ReadDatasetResponse messages (the serializer passes bytes through)
        manifest = layout.read_manifest(self.store, request.dataset)
        batch_size = request.batch_size or DEFAULT_BATCH
        if not 1 <= batch_size <= MAX_BATCH:
            raise invalid(f"batch_size: {batch_size} is not in [1, {MAX_BATCH}]")
        index, count = partition.check(request.partition)
        split = request.split if request.subset != data_pb2.SUBSET_UNSPECIFIED else data_pb2.SplitSpec()
        subset_rows = splits.subset_rows(layout.dataset_counts(manifest), split)[request.subset]
        sizes = partition.plan(subset_rows, request.partition, batch_size)
        # this part's positions among the subset's rows (the whole subset: whatever the shards hold)
        lo, hi = partition.bounds(subset_rows, index, count) if count > 1 else (0, sys.maxsize)
        rows = self._rows(manifest, request.subset, request.split, lo, hi)
        for sequence, batch in enumerate(partition.cut(rows, sizes)):
            # Pre-encoded ReadDatasetResponse: the rows go from the shard's arrays to the wire in one copy.
            yield tensors.encode_batch(batch, sequence)

    def _rows(self, manifest, subset_kind, split, lo: int, hi: int) -> Iterator[dict[str, np.ndarray]]:
        """The rows of one subset at positions [lo, hi) among that subset's rows, shard by shard."""
        prefix = layout.dataset_prefix(manifest["ref"]["name"], manifest["ref"]["version"])
        predefined = manifest.get("predefined_split", False)
        keep_all = subset_kind == data_pb2.SUBSET_UNSPECIFIED
        # the subset of every row, unless the shards say it (predefined) or every row is kept
        assignment = splits.assignment(manifest["num_rows"], split) if not keep_all and not predefined else None
        # Shards holding none of [lo, hi) are not fetched, when their subset rows are known up front.
        shards: list[tuple[dict, int, int | None]] = []
        start, seen = 0, 0
        for shard in manifest["shards"]:
            if keep_all or assignment is not None:
                n = (
                    shard["rows"]
                    if assignment is None
                    else int((assignment[start : start + shard["rows"]] == subset_kind).sum())
                )
                if seen < hi and seen + n > lo:
                    shards.append((shard, start, seen))
                seen += n
            else:
                shards.append((shard, start, None))
            start += shard["rows"]
        seen = (shards[0][2] or 0) if shards else 0
        fetched = self._shards(prefix, [s for s, _, _ in shards])
        for (shard, start, _), (_, buffer) in zip(shards, fetched, strict=True):
            arrays = read_shard(buffer)  # views into the shard's bytes (or memory map): no copy
            kinds = arrays.pop("subset", None)
            if not keep_all:
                keep = (kinds if assignment is None else assignment[start : start + shard["rows"]]) == subset_kind
                if not keep.all():
                    arrays = {k: v[keep] for k, v in arrays.items()}
            n = len(arrays["label"])
            if seen < lo or seen + n > hi:
                arrays = {k: v[max(lo - seen, 0) : max(hi - seen, 0)] for k, v in arrays.items()}
            seen += n
            if len(arrays["label"]):
                yield arrays
            del arrays, buffer, kinds  # let the shard's memory map go before the next one is mapped
            log.debug("ReadDataset %s: shard %s streamed", prefix, shard["key"])
            if seen >= hi:
                break

    def _shards(self, prefix: str, shards: list[dict]):
        """(shard, buffer) in order; the next shard is fetched on a thread while one streams."""

        # Each shard is hashed on the prefetch thread, in memory, before any of its rows is streamed
        # (DATA_LOSS naming the shard on a mismatch); a shard without "sha256" (an old manifest) is not.
        def fetch(shard):
            return self.store.get_buffer(prefix + shard["key"], sha256=shard.get("sha256"))

        with futures.ThreadPoolExecutor(1, thread_name_prefix="shard-prefetch") as pool:
            following = pool.submit(fetch, shards[0]) if shards else None
            for i, shard in enumerate(shards):
                assert following is not None  # submitted for this shard on the previous turn
                buffer = following.result()
                following = pool.submit(fetch, shards[i + 1]) if i + 1 < len(shards) else None
                yield shard, buffer
                del buffer  # at most this shard and the prefetched one are mapped at a time


def _final(responses: Iterator[collect_pb2.IngestResponse]) -> collect_pb2.IngestResponse:
    """The last message of an ingest's progress stream, which carries the dataset (the stream is drained)."""
    tail = collections.deque(responses, maxlen=1)
    if not tail:
        raise RuntimeError("an ingest ended without its result message")
    return tail[0]
