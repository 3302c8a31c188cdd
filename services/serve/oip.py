"""The Open Inference Protocol v2 (inference.GRPCInferenceService) on serve,
with Triton's ModelStreamInfer extension. Same models, same batcher and the
same input checks as cookline's Predict.

The servicer's plain methods (server_metadata, model_ready, metadata, infer) take and
return OIP messages and raise the domain's errors: the gRPC methods wrap them, and the
REST transport (services/serve/rest.py) calls them with messages it builds from JSON."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Iterable
from importlib import metadata as pkg_metadata

import numpy as np

from cookline.v1 import model_pb2
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc as oip_grpc
from services.common import layout
from services.common.errors import invalid, rpc, status_of
from services.serve import inputs as inputs_lib
from services.serve.models import LoadedModel, ModelManager, outputs_of
from services.serve.streaming import ActiveStreams, answer_in_order

# OIP datatype -> numpy dtype (little-endian), for decoding and error messages.
DATATYPES = {
    "BOOL": "?",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "BYTES": None,
}


# cookline.json output dtypes as OIP datatypes.
_OIP_TYPES = {"float32": "FP32", "string": "BYTES"}


def model_ref(name: str, version: str) -> model_pb2.ModelRef:
    """ModelRef from OIP's name and decimal-string version ("" = the deployed one)."""
    layout.check_name("model_name", name)
    if version and not version.isdigit():
        raise invalid(f"model_version: {version!r} is not an integer version")
    return model_pb2.ModelRef(name=name, version=int(version or 0))


def _deserialize_bytes(name: str, raw: bytes, count: int) -> np.ndarray:
    """BYTES raw contents (each element prefixed by its 4-byte little-endian length) as an object array."""
    values = np.empty(count, dtype=object)
    pos, end = 0, len(raw)
    for i in range(count):
        if pos + 4 > end:
            raise invalid(f"inputs[{name!r}]: raw BYTES contents end after {i} of {count} elements")
        (length,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + length > end:
            raise invalid(f"inputs[{name!r}]: raw BYTES element {i} claims {length} bytes, {end - pos} are left")
        values[i] = raw[pos : pos + length]
        pos += length
    if pos != end:
        raise invalid(f"inputs[{name!r}]: {end - pos} bytes after the {count} BYTES elements of the shape")
    return values


def _decode_input(tensor, raw: bytes | None, spec) -> np.ndarray:
    """One OIP input tensor as a numpy array: FP32 (raw or fp32_contents) or BYTES (raw or bytes_contents)."""
    name, shape = tensor.name, tuple(tensor.shape)
    accepted = ("FP32", "BYTES") if spec is None or not spec.is_string else ("BYTES",)
    if tensor.datatype not in accepted:
        kind = f", kind {spec.kind}" if spec is not None else ""
        raise invalid(
            f"inputs[{name!r}]: datatype {tensor.datatype or '(empty)'}, expected {' or '.join(accepted)}{kind}"
        )
    if any(d < 0 for d in shape):
        raise invalid(f"inputs[{name!r}]: negative dimension in shape {list(shape)}")
    count = math.prod(shape)
    if tensor.datatype == "FP32":
        if raw is not None:
            if len(raw) != count * 4:
                raise invalid(f"inputs[{name!r}]: shape {list(shape)} of FP32 needs {count * 4} bytes, got {len(raw)}")
            values = np.frombuffer(raw, dtype="<f4", count=count)
        else:
            values = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
            if values.size != count:
                raise invalid(f"inputs[{name!r}]: shape {list(shape)} needs {count} fp32_contents, got {values.size}")
        return values.reshape(shape)
    if raw is not None:
        return _deserialize_bytes(name, raw, count).reshape(shape)
    contents = tensor.contents.bytes_contents
    if len(contents) != count:
        raise invalid(f"inputs[{name!r}]: shape {list(shape)} needs {count} bytes_contents, got {len(contents)}")
    values = np.empty(count, dtype=object)
    values[:] = list(contents)
    return values.reshape(shape)


def inputs_of(request: oip.ModelInferRequest, model: LoadedModel) -> dict[str, np.ndarray]:
    """The request's inputs, from raw_input_contents or typed contents, checked against the model."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise invalid(f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs")
    arrays = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name in arrays:
            raise invalid(f"inputs[{tensor.name!r}]: given twice")
        arrays[tensor.name] = _decode_input(tensor, raw[i] if raw else None, model.specs.get(tensor.name))
    return model.check(arrays)


def _serialize_bytes(values: Iterable[bytes]) -> bytes:
    """BYTES tensor contents: each element prefixed by its 4-byte little-endian length."""
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


class InferenceServicer(oip_grpc.GRPCInferenceServiceServicer):
    def __init__(self, models: ModelManager, streams: ActiveStreams):
        self.models = models
        self.streams = streams
        self.version = pkg_metadata.version("cookline")

    @rpc
    async def ServerLive(self, request, context):
        return oip.ServerLiveResponse(live=True)

    @rpc
    async def ServerReady(self, request, context):
        return oip.ServerReadyResponse(ready=self.models.server_ready())

    @rpc
    async def ModelReady(self, request, context):
        return oip.ModelReadyResponse(ready=self.model_ready(request.name, request.version))

    def model_ready(self, name: str, version: str) -> bool:
        ref = model_ref(name, version)
        return self.models.model_ready(ref.name, ref.version)

    @rpc
    async def ServerMetadata(self, request, context):
        return self.server_metadata(["model_stream_infer"])

    def server_metadata(self, extensions: list[str]) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(name="cookline", version=self.version, extensions=extensions)

    @rpc
    async def ModelMetadata(self, request, context):
        return await self.metadata(request)

    async def metadata(self, request: oip.ModelMetadataRequest) -> oip.ModelMetadataResponse:
        ref = model_ref(request.name, request.version)
        model = self.models.loaded(ref)
        if model is not None:
            version, specs, answers = model.version, model.specs, model.outputs
        else:
            record = await asyncio.to_thread(layout.read_model_record, self.models.store, ref.name, ref.version)
            version, specs, answers = record.version, inputs_lib.specs_from_record(record), outputs_of(record)
        tensor = oip.ModelMetadataResponse.TensorMetadata
        # a classifier "scores" and "label"; a regressor "scores" [rows, 1]; a detector boxes, labels, scores
        outputs = [
            tensor(name=name, datatype=_OIP_TYPES[o["dtype"]], shape=[int(d) for d in o["shape"]])
            for name, o in answers.items()
        ]
        return oip.ModelMetadataResponse(
            name=ref.name,
            versions=[str(version)],
            platform="tensorflow_savedmodel",
            inputs=[self._input_metadata(spec) for spec in specs.values()],
            outputs=outputs,
        )

    def _input_metadata(self, spec) -> oip.ModelMetadataResponse.TensorMetadata:
        """An input's OIP metadata; its kind, columns and image settings as parameters."""
        out = oip.ModelMetadataResponse.TensorMetadata(
            name=spec.name, datatype="BYTES" if spec.is_string else "FP32", shape=spec.shape
        )
        params = {"kind": spec.kind}
        if spec.columns:
            params["columns"] = ",".join(spec.columns)
        if spec.kind == "image":
            params["encodings"] = ",".join(spec.encodings)
        for key, value in params.items():
            out.parameters[key].string_param = value
        if spec.kind == "image":
            out.parameters["max_bytes"].int64_param = self.models.limits.max_image_bytes
            for key in ("height", "width", "channels"):
                if spec.image and spec.image.get(key):
                    out.parameters[f"image_{key}"].int64_param = int(spec.image[key])
        return out

    async def _submit(self, request: oip.ModelInferRequest):
        wanted = {o.name for o in request.outputs}
        unknown = sorted(wanted - {"scores", "label", "boxes", "labels"})
        if unknown:
            raise invalid(
                f"outputs[{unknown[0]!r}]: unknown output (a classifier returns 'scores' and 'label', a detector "
                "'boxes', 'labels' and 'scores')"
            )
        return await self.models.submit(
            model_ref(request.model_name, request.model_version), lambda model: inputs_of(request, model)
        )

    @staticmethod
    def _response(request: oip.ModelInferRequest, model: LoadedModel, result) -> oip.ModelInferResponse:
        answers = model.answer(result)
        wanted = [o.name for o in request.outputs] or list(answers)
        for name in wanted:
            if name not in answers:
                has = " and ".join(repr(n) for n in answers)
                kind = {"regression": "a regressor", "detection": "a detector"}.get(model.task, "a classifier")
                raise invalid(f"outputs[{name!r}]: the model is {kind}; it returns {has}")
        response = oip.ModelInferResponse(model_name=model.name, model_version=str(model.version), id=request.id)
        for name in wanted:
            value = answers[name]
            if value.dtype.kind in "OSU":
                response.outputs.add(name=name, datatype="BYTES", shape=value.shape)
                response.raw_output_contents.append(_serialize_bytes(value.reshape(-1)))
            else:
                response.outputs.add(name=name, datatype="FP32", shape=value.shape)
                response.raw_output_contents.append(value.astype("<f4", copy=False).tobytes())
        return response

    @rpc
    async def ModelInfer(self, request, context):
        return await self.infer(request)

    async def infer(self, request: oip.ModelInferRequest) -> oip.ModelInferResponse:
        model, future = await self._submit(request)
        return self._response(request, model, await future)

    @rpc
    async def ModelStreamInfer(self, request_iterator, context):
        def answer(request, model, scores):
            return oip.ModelStreamInferResponse(infer_response=self._response(request, model, scores))

        def error(request, exc):
            code, text = status_of(exc)
            return oip.ModelStreamInferResponse(
                error_message=f"{code.name}: {text}",
                infer_response=oip.ModelInferResponse(model_name=request.model_name, id=request.id),
            )

        async for response in answer_in_order(request_iterator, self.streams, self._submit, answer, error):
            yield response


def service_name() -> str:
    return oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
