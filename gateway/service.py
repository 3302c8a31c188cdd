"""PipelineService: validates pipeline files and runs them stage by stage
(collect -> train, which pulls through process -> serve), recording every event."""
from __future__ import annotations

import logging
import threading

import grpc

from cookline import channels
from cookline.v1 import (collect_pb2, collect_pb2_grpc, gateway_pb2, gateway_pb2_grpc, model_pb2, serve_pb2,
                         serve_pb2_grpc, train_pb2, train_pb2_grpc)
from gateway import pipeline_file
from gateway.runs import RunStore
from services.common import layout
from services.common.errors import invalid, rpc, status_of

log = logging.getLogger("cookline.gateway")

# Most runs a ListRuns returns.
MAX_LIST = 1000
# Longest a pipeline file may be, in bytes.
MAX_PIPELINE_BYTES = 1 << 20


class _StageFailed(Exception):
    def __init__(self, stage: int, exc: BaseException):
        code, message = status_of(exc)
        super().__init__(f"{gateway_pb2.Stage.Name(stage).removeprefix('STAGE_').lower()} failed: {code.name}: {message}")


class PipelineServicer(gateway_pb2_grpc.PipelineServiceServicer):
    def __init__(self, runs: RunStore):
        self.runs = runs
        self.collect = collect_pb2_grpc.CollectServiceStub(channels.channel("collect"))
        self.train = train_pb2_grpc.TrainServiceStub(channels.channel("train"))
        self.serve = serve_pb2_grpc.ServeServiceStub(channels.channel("serve"))

    @rpc
    def SubmitRun(self, request: gateway_pb2.SubmitRunRequest, context) -> gateway_pb2.SubmitRunResponse:
        if len(request.pipeline.encode()) > MAX_PIPELINE_BYTES:
            raise invalid(f"pipeline: {len(request.pipeline)} bytes, at most {MAX_PIPELINE_BYTES}")
        spec = pipeline_file.parse(request.pipeline, request.base_dir)
        now = layout.now()
        run = gateway_pb2.Run(run_id=RunStore.new_id(), pipeline=spec, state=gateway_pb2.RUN_STATE_QUEUED,
                              created_at=now, updated_at=now)
        self.runs.create(run)
        log.info("run %s submitted: pipeline %s", run.run_id, spec.name)
        threading.Thread(target=self._execute, args=(run.run_id, spec), name=f"run-{run.run_id}", daemon=True).start()
        return gateway_pb2.SubmitRunResponse(run=run)

    @rpc
    def WatchRun(self, request: gateway_pb2.WatchRunRequest, context):
        for event in self.runs.watch(request.run_id, request.from_sequence, context.is_active):
            yield gateway_pb2.WatchRunResponse(event=event)

    @rpc
    def GetRun(self, request: gateway_pb2.GetRunRequest, context) -> gateway_pb2.GetRunResponse:
        return gateway_pb2.GetRunResponse(run=self.runs.get(request.run_id))

    @rpc
    def ListRuns(self, request: gateway_pb2.ListRunsRequest, context) -> gateway_pb2.ListRunsResponse:
        limit = request.limit or 100
        if not 1 <= limit <= MAX_LIST:
            raise invalid(f"limit: {limit} is not in [1, {MAX_LIST}]")
        return gateway_pb2.ListRunsResponse(runs=self.runs.list(limit))

    # --- the run itself ------------------------------------------------------

    def _stage(self, run_id: str, stage: int, finished: bool, message: str = "") -> None:
        if not finished:
            self.runs.update(run_id, stage=stage, state=gateway_pb2.RUN_STATE_RUNNING)
        self.runs.append(run_id, stage=gateway_pb2.StageEvent(stage=stage, finished=finished, message=message))

    def _execute(self, run_id: str, spec) -> None:
        try:
            dataset = self._collect(run_id, spec)
            model, metrics = self._train(run_id, spec, dataset)
            self._serve(run_id, model)
            final = self.runs.finish(run_id, state=gateway_pb2.RUN_STATE_SUCCEEDED, metrics=metrics)
        except _StageFailed as exc:
            final = self.runs.finish(run_id, state=gateway_pb2.RUN_STATE_FAILED, reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - a run never stays RUNNING
            log.exception("run %s: gateway error", run_id)
            final = self.runs.finish(run_id, state=gateway_pb2.RUN_STATE_FAILED, reason=f"gateway error: {exc}")
        log.info("run %s %s %s", run_id, gateway_pb2.RunState.Name(final.state), final.reason)

    def _collect(self, run_id, spec):
        self._stage(run_id, gateway_pb2.STAGE_COLLECT, False, f"ingesting {spec.collect.source}")
        info = None
        try:
            request = collect_pb2.IngestRequest(dataset=spec.name, source=spec.collect, strict=spec.strict)
            for progress in self.collect.Ingest(request):
                self.runs.append(run_id, ingest=progress)
                if progress.HasField("dataset"):
                    info = progress.dataset
        except grpc.RpcError as exc:
            raise _StageFailed(gateway_pb2.STAGE_COLLECT, exc) from None
        self.runs.update(run_id, dataset=info.ref)
        # Schema anomalies are in the last ingest event (structured); the stage line counts them.
        warnings = f", {len(progress.anomalies)} schema warnings" if progress.anomalies else ""
        self._stage(run_id, gateway_pb2.STAGE_COLLECT, True,
                    f"dataset {info.ref.name}@{info.ref.version}: {info.num_rows} rows{warnings}")
        return info.ref

    def _train(self, run_id, spec, dataset):
        self._stage(run_id, gateway_pb2.STAGE_TRAIN, False, f"training {spec.train.model} for {spec.train.epochs} epochs")
        result = None
        try:
            for response in self.train.Train(train_pb2.TrainRequest(run_id=run_id, dataset=dataset, pipeline=spec)):
                if response.HasField("progress"):
                    self.runs.append(run_id, train=response.progress)
                else:
                    result = response.result
        except grpc.RpcError as exc:
            raise _StageFailed(gateway_pb2.STAGE_TRAIN, exc) from None
        metrics = dict(result.metrics)
        self.runs.update(run_id, model=result.model, metrics=metrics)
        self._stage(run_id, gateway_pb2.STAGE_TRAIN, True, f"model {result.model.name} version {result.model.version}")
        return result.model, metrics

    def _serve(self, run_id, model: model_pb2.ModelRef):
        self._stage(run_id, gateway_pb2.STAGE_SERVE, False, f"loading {model.name} version {model.version}")
        try:
            self.serve.LoadModel(serve_pb2.LoadModelRequest(model=model), timeout=300)
        except grpc.RpcError as exc:
            raise _StageFailed(gateway_pb2.STAGE_SERVE, exc) from None
        self._stage(run_id, gateway_pb2.STAGE_SERVE, True, f"serving {model.name} version {model.version}")
