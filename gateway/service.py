"""PipelineService: the RPC layer of runs. It checks a submitted pipeline (cookline.spec, and the
plugins the services have), records the run and hands it to the run executor (gateway/executor.py);
watching, listing and cancelling read the run store."""

from __future__ import annotations

import logging

import grpc

from cookline import config
from cookline import spec as pipeline_spec
from cookline.spec import roots as source_roots
from cookline.spec import train as train_spec
from cookline.v1 import collect_pb2, data_pb2, gateway_pb2, gateway_pb2_grpc, pipeline_pb2
from gateway.executor import RunExecutor
from gateway.runs import RunStore
from services.common import layout
from services.common.errors import invalid, not_found, rpc

log = logging.getLogger("cookline.gateway")

# Most runs a ListRuns returns.
MAX_LIST = 1000
# Longest a pipeline file may be, in bytes.
MAX_PIPELINE_BYTES = 1 << 20


class PipelineServicer(gateway_pb2_grpc.PipelineServiceServicer):
    def __init__(self, runs: RunStore, executor: RunExecutor | None = None):
        self.runs = runs
        self.executor = executor or RunExecutor(runs)

    @rpc
    def SubmitRun(self, request: gateway_pb2.SubmitRunRequest, context) -> gateway_pb2.SubmitRunResponse:
        form = request.WhichOneof("form")
        roots = config.source_roots()
        if form == "spec":
            if request.spec.ByteSize() > MAX_PIPELINE_BYTES:
                raise invalid(f"spec: {request.spec.ByteSize()} bytes, at most {MAX_PIPELINE_BYTES}")
            spec = pipeline_pb2.PipelineSpec()
            spec.CopyFrom(request.spec)
            pipeline_spec.validate(spec)
            if spec.collect.source:
                spec.collect.source = pipeline_spec.resolve_source(spec.collect.source, request.base_dir, roots)
            for field in train_spec.local_paths(spec.train):
                path = pipeline_spec.resolve_source(
                    getattr(spec.train, field), request.base_dir, roots, f"train.{field}"
                )
                setattr(spec.train, field, path)
        elif form == "pipeline":
            if len(request.pipeline.encode()) > MAX_PIPELINE_BYTES:
                raise invalid(f"pipeline: {len(request.pipeline)} bytes, at most {MAX_PIPELINE_BYTES}")
            spec = pipeline_spec.parse(request.pipeline, request.base_dir, roots)
        else:
            raise invalid("pipeline: required (the pipeline file's text, or a PipelineSpec in spec)")
        self.executor.check_plugins(spec)
        source_roots.require(spec.collect.source, roots)  # NOT_FOUND at once, not when collect runs
        if spec.collect.dataset:  # pinned now: a resumed run trains on the same version
            spec.collect.dataset = self._stored_dataset(spec.collect.dataset)
        for field in train_spec.local_paths(spec.train):
            source_roots.require(getattr(spec.train, field), roots, f"train.{field}")
        if spec.train.base and not train_spec.is_path(spec.train.base):  # pinned: NAME:VERSION
            name, version, alias = train_spec.base_ref(spec.train.base)
            spec.train.base = f"{name}:{layout.base_version(self.runs.store, name, version, alias)}"
        now = layout.now()
        run = gateway_pb2.Run(
            run_id=RunStore.new_id(), pipeline=spec, state=gateway_pb2.RUN_STATE_QUEUED, created_at=now, updated_at=now
        )
        self.runs.create(run)
        log.info("run %s submitted: pipeline %s", run.run_id, spec.name)
        self.executor.start(run)
        return gateway_pb2.SubmitRunResponse(run=run)

    def _stored_dataset(self, value: str) -> str:
        """collect.dataset resolved to NAME@VERSION; NOT_FOUND naming collect.dataset when it is not stored."""
        ref = data_pb2.DatasetRef(**dict(zip(("name", "version"), pipeline_spec.dataset_ref(value), strict=True)))
        try:
            info = self.executor.collect.GetDataset(collect_pb2.GetDatasetRequest(dataset=ref), timeout=60).dataset
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                what = f"version {ref.version!r} of dataset {ref.name!r}" if ref.version else f"dataset {ref.name!r}"
                raise not_found(
                    f"collect.dataset: {what} is not in the store (upload it with UploadDataset / "
                    "cookline upload, or ingest it with a run)"
                ) from None
            raise
        return f"{info.ref.name}@{info.ref.version}"

    @rpc
    def WatchRun(self, request: gateway_pb2.WatchRunRequest, context):
        for event in self.runs.watch(request.run_id, request.from_sequence, context.is_active):
            yield gateway_pb2.WatchRunResponse(event=event)

    @rpc
    def GetRun(self, request: gateway_pb2.GetRunRequest, context) -> gateway_pb2.GetRunResponse:
        return gateway_pb2.GetRunResponse(run=self.runs.get(request.run_id))

    @rpc
    def CancelRun(self, request: gateway_pb2.CancelRunRequest, context) -> gateway_pb2.CancelRunResponse:
        run = self.runs.get(request.run_id)  # NOT_FOUND for an unknown run
        if self.executor.cancel(request.run_id):
            run = self.runs.get(request.run_id)
        return gateway_pb2.CancelRunResponse(run=run)

    @rpc
    def ListRuns(self, request: gateway_pb2.ListRunsRequest, context) -> gateway_pb2.ListRunsResponse:
        limit = request.limit or 100
        if not 1 <= limit <= MAX_LIST:
            raise invalid(f"limit: {limit} is not in [1, {MAX_LIST}]")
        return gateway_pb2.ListRunsResponse(runs=self.runs.list(limit))
