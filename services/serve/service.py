"""ServeService: model lifecycle, predictions (unary and bidirectional stream) and stats."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import numpy as np

from cookline import tensors
from cookline.v1 import serve_pb2, serve_pb2_grpc
from services.common import layout
from services.common.errors import invalid, rpc, status_of
from services.serve.models import LoadedModel, ModelManager, metadata_from_store_record
from services.serve.streaming import ActiveStreams, answer_in_order

log = logging.getLogger("cookline.serve")


def inputs_of(request: serve_pb2.PredictRequest, model: LoadedModel) -> dict[str, np.ndarray]:
    """The request's inputs decoded (numbers as zero-copy views, strings as object arrays
    of bytes) and checked against the model, row by row."""
    arrays = {}
    for name, tensor in request.inputs.items():
        try:
            arrays[name] = tensors.to_numpy(tensor)
        except tensors.TensorError as exc:
            raise invalid(f"inputs[{name!r}]: {exc}") from None
    return model.check(arrays)


class ServeServicer(serve_pb2_grpc.ServeServiceServicer):
    """Runs on the server's event loop: anything that reads the store or loads a
    model runs on a worker thread (asyncio.to_thread)."""

    def __init__(self, models: ModelManager, streams: ActiveStreams):
        self.models = models
        self.streams = streams

    # --- lifecycle -------------------------------------------------------------

    @rpc
    async def LoadModel(self, request, context) -> serve_pb2.LoadModelResponse:
        batching = request.batching if request.HasField("batching") else None
        model = await asyncio.to_thread(self.models.deploy, request.model, request.alias, batching)
        return serve_pb2.LoadModelResponse(metadata=model.metadata())

    @rpc
    async def UnloadModel(self, request, context) -> serve_pb2.UnloadModelResponse:
        model = await asyncio.to_thread(self.models.unload, request.name)
        return serve_pb2.UnloadModelResponse(model=model.ref)

    @rpc
    async def GetModelMetadata(self, request, context) -> serve_pb2.GetModelMetadataResponse:
        model = self.models.loaded(request.model)
        if model is not None:
            return serve_pb2.GetModelMetadataResponse(metadata=model.metadata())
        ref = request.model
        record = await asyncio.to_thread(layout.read_model_record, self.models.store, ref.name, ref.version)
        return serve_pb2.GetModelMetadataResponse(metadata=metadata_from_store_record(record, self.models.limits))

    @rpc
    async def GetStats(self, request, context) -> serve_pb2.GetStatsResponse:
        return serve_pb2.GetStatsResponse(models=self.models.all_stats(request.name), active_streams=self.streams.count)

    # --- predictions -------------------------------------------------------------

    async def submit(self, request: serve_pb2.PredictRequest) -> tuple[LoadedModel, asyncio.Future]:
        return await self.models.submit(request.model, lambda model: inputs_of(request, model))

    @staticmethod
    def response(model: LoadedModel, result) -> serve_pb2.PredictResponse:
        response = serve_pb2.PredictResponse(model=model.ref, class_names=model.class_names)
        for name, value in model.answer(result).items():  # a regressor answers "scores" [rows, 1] only
            tensors.from_numpy(value, out=response.outputs[name])
        return response

    @rpc
    async def Predict(self, request, context) -> serve_pb2.PredictResponse:
        model, future = await self.submit(request)
        return self.response(model, await future)

    @rpc
    async def PredictStream(self, request_iterator, context) -> AsyncIterator[serve_pb2.PredictStreamResponse]:
        def answer(message, model, scores):
            return serve_pb2.PredictStreamResponse(
                correlation_id=message.correlation_id, result=self.response(model, scores)
            )

        def error(message, exc):
            if message.fail_fast:
                raise exc
            code, text = status_of(exc)
            return serve_pb2.PredictStreamResponse(
                correlation_id=message.correlation_id, error=serve_pb2.PredictError(code=code.value[0], message=text)
            )

        async for response in answer_in_order(
            request_iterator, self.streams, lambda message: self.submit(message.request), answer, error
        ):
            yield response
