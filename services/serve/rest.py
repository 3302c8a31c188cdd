"""The Open Inference Protocol v2 over HTTP/REST (KServe's and Triton's `/v2/...`), with
Triton's binary tensor data extension, on serve's HTTP port.

A thin transport over services/serve/oip.py: each request becomes the OIP message the gRPC
transport receives (JSON tensor data is written as raw_input_contents, in the protocol's
byte layout), goes through the same servicer methods (same models, input checks and
batcher), and the OIP response is written back as JSON (or JSON + binary outputs). Tensor
rules (names, dtypes, shapes, rows) live in oip.py only.
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inference import grpc_service_pb2 as oip
from services.common import http
from services.common.http import HTTPFail
from services.serve.oip import DATATYPES, InferenceServicer, _deserialize_bytes, _serialize_bytes

# The OIP REST extensions cookline answers (GET /v2 lists them).
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "inference-header-content-length"
ACCEPTED_TYPES = ("application/json", "application/octet-stream")


def _json(value, status: int = 200, headers=None) -> Response:
    return Response(orjson.dumps(value), status_code=status, headers=headers, media_type="application/json")


# --- request: JSON (+ binary) -> oip.ModelInferRequest ---------------------------------


def _split_body(request: Request, body: bytes) -> tuple[bytes, bytes]:
    """The JSON header and the binary tail of a body (Triton's binary tensor data extension)."""
    declared = request.headers.get(HEADER_LENGTH)
    if declared is None:
        return body, b""
    if not declared.isdigit() or int(declared) > len(body):
        raise HTTPFail(
            400, f"Inference-Header-Content-Length: {declared!r} is not a length within the {len(body)}-byte body"
        )
    return body[: int(declared)], body[int(declared) :]


def _field(where: str, obj: dict, key: str, kind, required: bool = True):
    value = obj.get(key)
    if value is None:
        if required:
            raise HTTPFail(400, f"{where}.{key}: required")
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        expected = {str: "a string", list: "a list", dict: "an object", int: "an integer"}.get(kind, kind.__name__)
        raise HTTPFail(400, f"{where}.{key}: {type(value).__name__} {str(value)[:40]!r}, expected {expected}")
    return value


def _flatten(where: str, data: list) -> list:
    """Row-major elements of a nested JSON list (the protocol allows nested or flat), one level
    at a time (a C-speed chain per level)."""
    while data and isinstance(data[0], list):
        if not all(isinstance(d, list) for d in data):
            raise HTTPFail(400, f"{where}: nested lists mixed with values at the same level")
        data = list(chain.from_iterable(data))
    return data


def _bytes_element(where: str, value) -> bytes:
    if isinstance(value, str):
        return value.encode()
    raise HTTPFail(400, f"{where}: {type(value).__name__} {str(value)[:40]!r}, expected a string (BYTES)")


def json_text(value) -> str:
    try:
        return orjson.dumps(value).decode()[:40]
    except TypeError:  # e.g. an integer beyond 64 bits
        return repr(value)[:40]


def _encode_data(where: str, datatype: str, data: list) -> bytes:
    """JSON tensor data in the protocol's raw layout: little-endian values, row-major; BYTES
    elements each with a 4-byte little-endian length."""
    flat = _flatten(where, data)
    if datatype == "BYTES":
        return _serialize_bytes(_bytes_element(f"{where}[{i}]", v) for i, v in enumerate(flat))
    try:
        values = np.asarray(flat)
    except ValueError:  # lists left among the values (uneven nesting)
        values = np.asarray(flat, dtype=object)
    dtype = np.dtype(DATATYPES[datatype])
    kinds = "b" if dtype.kind == "b" else "iu" if dtype.kind in "iu" else "iuf"
    if values.size and values.dtype.kind not in kinds:
        for i, value in enumerate(flat):  # name the first element that is not of the datatype
            if isinstance(value, (list, dict)) or np.asarray(value).dtype.kind not in kinds:
                raise HTTPFail(400, f"{where}[{i}]: {json_text(value)} is not a {datatype} value")
        raise HTTPFail(400, f"{where}: not {datatype} values")
    if values.size and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            i = int(np.argmax((values < info.min) | (values > info.max)))
            raise HTTPFail(400, f"{where}[{i}]: {json_text(flat[i])} is out of the range of {datatype}")
    return values.astype(dtype, copy=False).tobytes()


def infer_request(name: str, version: str, request: Request, body: bytes) -> tuple[oip.ModelInferRequest, dict, bool]:
    """The OIP message of a REST infer request, the requested outputs (name -> answered as
    binary) and whether outputs not named are answered as binary."""
    header, binary = _split_body(request, body)
    doc = http.json_body(header)
    if not isinstance(doc, dict):
        raise HTTPFail(400, f'body: {type(doc).__name__}, expected a JSON object with "inputs"')
    message = oip.ModelInferRequest(
        model_name=name, model_version=version, id=_field("body", doc, "id", str, required=False) or ""
    )
    inputs = _field("body", doc, "inputs", list)
    offset = 0
    for i, tensor in enumerate(inputs):
        where = f"inputs[{i}]"
        if not isinstance(tensor, dict):
            raise HTTPFail(400, f"{where}: {type(tensor).__name__}, expected an object")
        datatype = _field(where, tensor, "datatype", str)
        shape = _field(where, tensor, "shape", list)
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise HTTPFail(400, f"{where}.shape: {shape!r}, expected a list of integers")
        if datatype not in DATATYPES:
            raise HTTPFail(400, f"{where}.datatype: {datatype!r} is not one of {', '.join(DATATYPES)}")
        message.inputs.add(name=_field(where, tensor, "name", str), datatype=datatype, shape=shape)
        parameters = _field(where, tensor, "parameters", dict, required=False) or {}
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise HTTPFail(
                    400,
                    f"{where}.parameters.binary_data_size: {size!r} is not a length within the "
                    f"{len(binary) - offset} binary bytes left of the body",
                )
            message.raw_input_contents.append(binary[offset : offset + size])
            offset += size
        else:
            data = _field(where, tensor, "data", list)
            message.raw_input_contents.append(_encode_data(f"{where}.data", datatype, data))
    if offset != len(binary):
        raise HTTPFail(
            400,
            f"body: {len(binary) - offset} binary bytes after the JSON header that no "
            "input's parameters.binary_data_size claims",
        )
    binary_default = bool((_field("body", doc, "parameters", dict, required=False) or {}).get("binary_data_output"))
    wanted = {}
    for i, output in enumerate(_field("body", doc, "outputs", list, required=False) or []):
        if not isinstance(output, dict):
            raise HTTPFail(400, f"outputs[{i}]: {type(output).__name__}, expected an object")
        out_name = _field(f"outputs[{i}]", output, "name", str)
        message.outputs.add(name=out_name)
        parameters = _field(f"outputs[{i}]", output, "parameters", dict, required=False) or {}
        wanted[out_name] = bool(parameters.get("binary_data", binary_default))
    return message, wanted, binary_default


# --- response: oip.ModelInferResponse -> JSON (+ binary) --------------------------------


def infer_response(response: oip.ModelInferResponse, wanted: dict, binary_default: bool) -> Response:
    outputs, tail = [], []
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        out: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if wanted.get(tensor.name, binary_default):
            out["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        elif tensor.datatype == "BYTES":
            elements = _deserialize_bytes(tensor.name, raw, math.prod(tensor.shape))
            out["data"] = [v.decode("utf-8", "replace") for v in elements]
        else:
            out["data"] = np.frombuffer(raw, DATATYPES[tensor.datatype], math.prod(tensor.shape))
        outputs.append(out)
    doc = {"model_name": response.model_name, "model_version": response.model_version, "outputs": outputs}
    if response.id:
        doc["id"] = response.id
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not tail:
        return Response(header, media_type="application/json")
    return Response(
        b"".join([header, *tail]),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


# --- metadata ------------------------------------------------------------------------


def _parameter(value: oip.InferParameter):
    which = value.WhichOneof("parameter_choice")
    return getattr(value, which) if which else None


def _tensor_metadata(tensor) -> dict:
    out = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
    parameters = getattr(tensor, "parameters", None)
    if parameters:
        out["parameters"] = {k: _parameter(v) for k, v in parameters.items()}
    return out


def model_metadata(response: oip.ModelMetadataResponse) -> dict:
    return {
        "name": response.name,
        "versions": list(response.versions),
        "platform": response.platform,
        "inputs": [_tensor_metadata(t) for t in response.inputs],
        "outputs": [_tensor_metadata(t) for t in response.outputs],
    }


# --- the app -------------------------------------------------------------------------


def app(servicer: InferenceServicer) -> Starlette:
    """The REST app over `servicer` (the one the gRPC server runs, so they share its batchers)."""
    models = servicer.models

    async def server_metadata(request: Request) -> Response:
        meta = servicer.server_metadata(EXTENSIONS)
        return _json({"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)})

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        is_ready = models.server_ready()
        return _json({"ready": is_ready}, 200 if is_ready else 503)

    async def model_ready(request: Request) -> Response:
        params = request.path_params
        is_ready = servicer.model_ready(params["name"], params.get("version", ""))
        return _json({"name": params["name"], "ready": is_ready}, 200 if is_ready else 503)

    async def metadata(request: Request) -> Response:
        params = request.path_params
        meta = await servicer.metadata(oip.ModelMetadataRequest(name=params["name"], version=params.get("version", "")))
        return _json(model_metadata(meta))

    async def infer(request: Request) -> Response:
        http.require_content_type(request, *ACCEPTED_TYPES)
        params = request.path_params
        message, wanted, binary_default = infer_request(
            params["name"], params.get("version", ""), request, await request.body()
        )
        return infer_response(await servicer.infer(message), wanted, binary_default)

    model = "/v2/models/{name}"
    version = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route(model + "/infer", infer, methods=["POST"]),
        Route(version + "/infer", infer, methods=["POST"]),
        Route(model + "/ready", model_ready, methods=["GET"]),
        Route(version + "/ready", model_ready, methods=["GET"]),
        Route(model, metadata, methods=["GET"]),
        Route(version, metadata, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers=http.exception_handlers())
