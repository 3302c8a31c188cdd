"""The gateway's JSON API under /api/: runs, datasets, models and predictions.

Each route is a thin adapter over the gRPC services (the gateway's own
PipelineService and RegistryService, collect's catalogue, serve's predictions and
deployments): the same validation and errors as a gRPC client gets, answered as
JSON. A run's events stream as server-sent events from WatchRun.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import anyio
import grpc
from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from cookline import channels, spec
from cookline.client import UPLOAD_CHUNK
from cookline.v1 import (
    collect_pb2,
    collect_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    model_pb2,
    pipeline_pb2,
    registry_pb2,
    registry_pb2_grpc,
    serve_pb2,
    serve_pb2_grpc,
)
from gateway.web import predict
from services.collect import stats
from services.common import layout
from services.common.http import HTTPFail, require_content_type
from services.common.http import json_body as parse_json

# Seconds a unary call to a service may take (loading a model may take a while).
TIMEOUT_S = 60
LOAD_TIMEOUT_S = 300
# Event streams open at once: each waits on WatchRun in a thread of its own pool, so open
# dashboards never take the threads the other API calls run on.
MAX_EVENT_STREAMS = 256
_EVENT_THREADS = anyio.CapacityLimiter(MAX_EVENT_STREAMS)


def as_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


async def _call(fn, *args, **kwargs):
    """A blocking gRPC call, run off the event loop."""
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


async def json_body(request: Request) -> dict:
    """The request's JSON object; 415 for another content type, 400 for malformed JSON."""
    require_content_type(request, "application/json")
    body = parse_json(await request.body())
    if not isinstance(body, dict):
        raise HTTPFail(400, f"body: {type(body).__name__}, expected a JSON object")
    return body


def _int(value, field: str, low: int = 0) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise HTTPFail(400, f"{field}: {value!r} is not an integer") from None
    if isinstance(value, bool) or number < low or (isinstance(value, float) and value != number):
        raise HTTPFail(400, f"{field}: {value!r} is not an integer from {low}")
    return number


class Api:
    def __init__(self, env: Mapping[str, str] | None = None):
        gateway = channels.channel("gateway", env)
        self.pipelines = gateway_pb2_grpc.PipelineServiceStub(gateway)
        self.registry = registry_pb2_grpc.RegistryServiceStub(gateway)
        self.collect = collect_pb2_grpc.CollectServiceStub(channels.channel("collect", env))
        self.serve = serve_pb2_grpc.ServeServiceStub(channels.channel("serve", env))

    def routes(self) -> list[Route]:
        return [
            Route("/api/runs", self.list_runs, methods=["GET"]),
            Route("/api/runs", self.submit, methods=["POST"]),
            Route("/api/runs/{run_id}", self.get_run, methods=["GET"]),
            Route("/api/runs/{run_id}/cancel", self.cancel, methods=["POST"]),
            Route("/api/runs/{run_id}/events", self.events, methods=["GET"]),
            Route("/api/datasets", self.datasets, methods=["GET"]),
            Route("/api/models", self.models, methods=["GET"]),
            Route("/api/models/{name}", self.model, methods=["GET"]),
            Route("/api/models/{name}/deploy", self.deploy, methods=["POST"]),
            Route("/api/models/{name}/undeploy", self.undeploy, methods=["POST"]),
            Route("/api/models/{name}/aliases/{alias}", self.set_alias, methods=["PUT"]),
            Route("/api/models/{name}/metadata", self.metadata, methods=["GET"]),
            Route("/api/models/{name}/predict", self.predict, methods=["POST"]),
            Route("/api/models/{name}/versions/{version}/predict", self.predict, methods=["POST"]),
            Route("/api/choices", self.choices, methods=["GET"]),
        ]

    # --- runs ------------------------------------------------------------------------

    async def list_runs(self, request: Request):
        limit = _int(request.query_params.get("limit", 100), "limit", 1)
        response = await _call(self.pipelines.ListRuns, gateway_pb2.ListRunsRequest(limit=limit), timeout=TIMEOUT_S)
        return JSONResponse({"runs": [as_dict(r) for r in response.runs]})

    async def get_run(self, request: Request):
        response = await _call(
            self.pipelines.GetRun, gateway_pb2.GetRunRequest(run_id=request.path_params["run_id"]), timeout=TIMEOUT_S
        )
        return JSONResponse({"run": as_dict(response.run)})

    async def cancel(self, request: Request):
        response = await _call(
            self.pipelines.CancelRun,
            gateway_pb2.CancelRunRequest(run_id=request.path_params["run_id"]),
            timeout=TIMEOUT_S,
        )
        return JSONResponse({"run": as_dict(response.run)})

    async def submit(self, request: Request):
        """JSON {"pipeline": text}, or a multipart upload of a data file with the fields of a
        small pipeline (name, label, format, model, epochs)."""
        if require_content_type(request, "application/json", "multipart/form-data") == "multipart/form-data":
            text = await self._upload_pipeline(request)
        else:
            pasted = (await json_body(request)).get("pipeline")
            if not isinstance(pasted, str) or not pasted.strip():
                raise HTTPFail(400, "pipeline: required (the pipeline file's text)")
            text = pasted
        response = await _call(self.pipelines.SubmitRun, gateway_pb2.SubmitRunRequest(pipeline=text), timeout=TIMEOUT_S)
        return JSONResponse({"run": as_dict(response.run)}, status_code=201)

    async def _upload_pipeline(self, request: Request) -> str:
        """Uploads the file to collect as a dataset (UploadDataset, read as `format` and `label`
        say) and returns a pipeline training on that dataset version."""
        form = await request.form(max_files=1, max_fields=16, max_part_size=1 << 20)
        upload = form.get("file")
        if upload is None or isinstance(upload, str) or not upload.filename:
            raise HTTPFail(400, "file: required (the data file)")
        filename = os.path.basename(upload.filename.replace("\\", "/"))
        if not filename or filename.startswith("."):
            raise HTTPFail(400, f"file: {upload.filename!r} is not a usable file name")
        name = layout.check_name("name", str(form.get("name") or "").strip())
        fmt = str(form.get("format") or ("npz" if filename.endswith(".npz") else "csv"))
        label = str(form.get("label") or "").strip()
        if fmt == "csv" and not label:
            raise HTTPFail(400, "label: required for a CSV file (the column to predict)")
        epochs = _int(form.get("epochs") or 20, "epochs", 1)
        data = await upload.read()
        if not data:
            raise HTTPFail(400, "file: the file is empty")

        def messages():
            source = pipeline_pb2.CollectSpec(format=fmt, label=label)
            yield collect_pb2.UploadDatasetRequest(dataset=name, source=source)
            for at in range(0, len(data), UPLOAD_CHUNK):
                yield collect_pb2.UploadDatasetRequest(
                    file=collect_pb2.UploadFileChunk(path=filename, data=data[at : at + UPLOAD_CHUNK])
                )

        uploaded = (await _call(self.collect.UploadDataset, messages(), timeout=LOAD_TIMEOUT_S)).dataset.ref
        return json.dumps(
            {
                "name": name,
                "collect": {"dataset": f"{uploaded.name}@{uploaded.version}"},
                "split": {"validation": 0.2, "seed": 1},
                "train": {"model": str(form.get("model") or "mlp"), "epochs": epochs},
            }
        )

    async def events(self, request: Request):
        """The run's events as server-sent events (`id` = sequence, `data` = the RunEvent as JSON),
        from ?from= (or Last-Event-ID + 1) on, ending after the run's final event."""
        run_id = request.path_params["run_id"]
        last = request.headers.get("last-event-id")
        start = _int(last, "Last-Event-ID") + 1 if last else _int(request.query_params.get("from", 0), "from")
        # Errors (unknown run) come before the stream starts, as a JSON answer.
        await _call(self.pipelines.GetRun, gateway_pb2.GetRunRequest(run_id=run_id), timeout=TIMEOUT_S)
        call = self.pipelines.WatchRun(gateway_pb2.WatchRunRequest(run_id=run_id, from_sequence=start))

        async def stream():
            try:
                while True:
                    response = await anyio.to_thread.run_sync(next, call, None, limiter=_EVENT_THREADS)
                    if response is None:
                        return
                    event = response.event
                    yield f"id: {event.sequence}\ndata: {json.dumps(as_dict(event))}\n\n"
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    yield f"event: error\ndata: {json.dumps({'error': exc.details() or exc.code().name})}\n\n"
            finally:
                call.cancel()  # the page went away: so does the WatchRun stream

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    # --- datasets --------------------------------------------------------------------

    async def datasets(self, request: Request):
        """Every dataset version, newest first, each with its schema anomalies against the
        version before it."""
        response = await _call(self.collect.ListDatasets, collect_pb2.ListDatasetsRequest(), timeout=TIMEOUT_S)
        infos = list(response.datasets)
        out = []
        for i, info in enumerate(infos):
            older = [d for d in infos[i + 1 :] if d.ref.name == info.ref.name]
            entry = as_dict(info)
            entry["anomalies"] = [as_dict(a) for a in stats.anomalies(older[0], info)] if older else []
            out.append(entry)
        return JSONResponse({"datasets": out})

    # --- models ----------------------------------------------------------------------

    async def models(self, request: Request):
        response = await _call(self.registry.ListModels, registry_pb2.ListModelsRequest(), timeout=TIMEOUT_S)
        return JSONResponse({"models": [as_dict(m) for m in response.models]})

    async def model(self, request: Request):
        response = await _call(
            self.registry.GetModel, registry_pb2.GetModelRequest(name=request.path_params["name"]), timeout=TIMEOUT_S
        )
        return JSONResponse({"model": as_dict(response.model)})

    async def deploy(self, request: Request):
        """{"version": n} or {"alias": "a"}; neither deploys the newest version. On every serve replica
        (RegistryService.DeployModel): {"metadata": ..., "replicas": [each replica's answer]}."""
        body = await json_body(request)
        version = _int(body.get("version") or 0, "version")
        alias = body.get("alias") or ""
        if not isinstance(alias, str):
            raise HTTPFail(400, f"alias: {alias!r} is not a string")
        response = await _call(
            self.registry.DeployModel,
            registry_pb2.DeployModelRequest(
                model=model_pb2.ModelRef(name=request.path_params["name"], version=version), alias=alias
            ),
            timeout=LOAD_TIMEOUT_S,
        )
        return JSONResponse(as_dict(response))

    async def undeploy(self, request: Request):
        """On every serve replica (RegistryService.UndeployModel): {"model": ..., "replicas": [...]}."""
        response = await _call(
            self.registry.UndeployModel,
            registry_pb2.UndeployModelRequest(name=request.path_params["name"]),
            timeout=LOAD_TIMEOUT_S,
        )
        return JSONResponse(as_dict(response))

    async def set_alias(self, request: Request):
        body = await json_body(request)
        version = _int(body.get("version"), "version", 1)
        response = await _call(
            self.registry.SetAlias,
            registry_pb2.SetAliasRequest(
                name=request.path_params["name"], alias=request.path_params["alias"], version=version
            ),
            timeout=TIMEOUT_S,
        )
        return JSONResponse({"model": as_dict(response.model)})

    def _ref(self, request: Request) -> model_pb2.ModelRef:
        raw = request.path_params.get("version", request.query_params.get("version", 0))
        return model_pb2.ModelRef(name=request.path_params["name"], version=_int(raw, "version"))

    async def _metadata(self, ref: model_pb2.ModelRef) -> serve_pb2.ModelMetadata:
        response = await _call(
            self.serve.GetModelMetadata, serve_pb2.GetModelMetadataRequest(model=ref), timeout=TIMEOUT_S
        )
        return response.metadata

    async def metadata(self, request: Request):
        """The model's metadata and the form fields of its inputs (one per column)."""
        metadata = await self._metadata(self._ref(request))
        return JSONResponse({"metadata": as_dict(metadata), "fields": predict.fields(metadata)})

    async def predict(self, request: Request):
        """One raw row: JSON {"row": {column: value}} (or a list of numbers), or multipart/form-data
        with one part per column (an image column's part is the uploaded file)."""
        ref = self._ref(request)
        if require_content_type(request, "application/json", "multipart/form-data") == "multipart/form-data":
            form = await request.form(max_files=8, max_fields=1024, max_part_size=1 << 20)
            row = {}
            for key, value in form.multi_items():
                row[key] = value if isinstance(value, str) else await value.read()
        else:
            body = await json_body(request)
            if "row" not in body:
                raise HTTPFail(400, "body.row: required ({column: value})")
            row = body["row"]
        metadata = await self._metadata(ref)
        grpc_request = predict.request(ref, metadata, row)
        response = await _call(self.serve.Predict, grpc_request, timeout=TIMEOUT_S)
        return JSONResponse(predict.answer(response))

    async def choices(self, request: Request):
        """What the submit form offers: model families and source formats."""
        return JSONResponse({"models": list(spec.MODELS.names()), "formats": list(spec.SOURCES.names())})
