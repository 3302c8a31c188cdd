"""Raw rows from the web -> a cookline PredictRequest, built from the model's metadata.

A row maps column names to raw values: numbers for numeric columns, strings for
category and text columns, and an image's encoded bytes (an uploaded file, or
{"b64": "..."} in JSON). `fields(metadata)` lists what a model takes, one field
per column, in the order of its inputs; the dashboard's predict form is built
from the same list.
"""

from __future__ import annotations

import base64
import binascii
import math

import numpy as np

from cookline import tensors
from cookline.v1 import model_pb2, serve_pb2, tensor_pb2
from services.common.http import HTTPFail

KINDS = ("numeric", "category", "text", "image")
# An input without a recorded kind (a model from before raw inputs) is read by its name.
_KIND_OF_NAME = {"features": "numeric", "categorical": "category", "text": "text", "image": "image"}


def _kind(name: str, spec) -> str:
    """numeric, category, text or image: the input's recorded kind (an InputKind enum), else by name."""
    field = spec.DESCRIPTOR.fields_by_name.get("kind")
    value = getattr(spec, "kind", 0) if field is not None else 0
    if value and field.enum_type is not None:
        return field.enum_type.values_by_number[value].name.removeprefix("INPUT_KIND_").lower()
    return _KIND_OF_NAME.get(name, "numeric")


def _columns(name: str, spec, metadata: serve_pb2.ModelMetadata) -> list[str]:
    """The column behind each position of an input (one for a 1-D text or image input)."""
    if "columns" in spec.DESCRIPTOR.fields_by_name and list(spec.columns):
        return list(spec.columns)
    if name == "features" and metadata.feature_columns:
        return list(metadata.feature_columns)
    if len(spec.shape) >= 2 and spec.shape[1] > 0:
        return [f"{name}_{i}" for i in range(spec.shape[1])]
    return [name]


def fields(metadata: serve_pb2.ModelMetadata) -> list[dict]:
    """One {"column", "input", "kind"} per column the model takes, inputs in name order."""
    out = []
    for name in sorted(metadata.inputs):
        spec = metadata.inputs[name]
        kind = _kind(name, spec)
        out += [{"column": column, "input": name, "kind": kind} for column in _columns(name, spec, metadata)]
    return out


def _number(column: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise HTTPFail(400, f"row[{column!r}]: {value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise HTTPFail(400, f"row[{column!r}]: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise HTTPFail(400, f"row[{column!r}]: {value!r} is not a finite number")
    return number


def _string(column: str, value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value).encode()
    if not isinstance(value, str):
        raise HTTPFail(400, f"row[{column!r}]: {value!r} is not a string")
    return value.encode()


def _image(column: str, value) -> bytes:
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, dict) and isinstance(value.get("b64"), str):
        try:
            data = base64.b64decode(value["b64"], validate=True)
        except binascii.Error:
            raise HTTPFail(400, f"row[{column!r}].b64: not valid base64") from None
    else:
        raise HTTPFail(400, f'row[{column!r}]: an image is an uploaded file or {{"b64": "..."}}')
    if not data:
        raise HTTPFail(400, f"row[{column!r}]: the image is empty")
    return data


def request(model: model_pb2.ModelRef, metadata: serve_pb2.ModelMetadata, row) -> serve_pb2.PredictRequest:
    """The PredictRequest of one raw row: a {column: value} mapping, or a list of numbers in column
    order for a model that takes numeric features only. 400 names the missing or bad column."""
    taken = fields(metadata)
    if isinstance(row, list):
        if any(f["kind"] != "numeric" for f in taken):
            raise HTTPFail(400, "row: a list is only for numeric columns; send {column: value}")
        if len(row) != len(taken):
            raise HTTPFail(
                400, f"row: {len(row)} values, the model takes {len(taken)} ({', '.join(f['column'] for f in taken)})"
            )
        row = {f["column"]: v for f, v in zip(taken, row, strict=True)}
    if not isinstance(row, dict):
        raise HTTPFail(400, "row: expected an object of column values")
    known = {f["column"] for f in taken}
    unknown = sorted(set(row) - known)
    if unknown:
        raise HTTPFail(400, f"row: unknown column {unknown[0]!r} (the model takes {', '.join(sorted(known))})")
    missing = [f["column"] for f in taken if f["column"] not in row]
    if missing:
        raise HTTPFail(400, f"row: column {missing[0]!r} is missing")
    out = serve_pb2.PredictRequest(model=model)
    for name in sorted(metadata.inputs):
        spec = metadata.inputs[name]
        kind, columns = _kind(name, spec), _columns(name, spec, metadata)
        if kind == "numeric":
            values = np.asarray([[_number(c, row[c]) for c in columns]], np.float32)
        else:
            convert = _image if kind == "image" else _string
            values = np.empty((1, len(columns)), object)
            values[0, :] = [convert(c, row[c]) for c in columns]
            if len(spec.shape) == 1:  # one text or image per row: [rows]
                values = values.reshape(1)
        if spec.dtype == tensor_pb2.DATA_TYPE_FLOAT32 or kind == "numeric":
            values = values.astype(np.float32)
        tensors.from_numpy(values, out=out.inputs[name])
    return out


def answer(response: serve_pb2.PredictResponse) -> dict:
    """{"model", "label", "scores": {class: score}} of a one-row response (a regressor: "value"; a
    detector: "detections", [{"label", "score", "box"}, ...])."""
    result = {"model": {"name": response.model.name, "version": int(response.model.version)}}
    if "boxes" in response.outputs:
        from cookline.client import rows_from_response

        return result | rows_from_response(response)[0]
    scores = tensors.to_numpy(response.outputs["scores"])[0]
    if "label" not in response.outputs:
        return result | {"value": float(scores[0])}
    label = tensors.to_numpy(response.outputs["label"]).reshape(-1)[0]
    names = list(response.class_names) or [str(i) for i in range(len(scores))]
    return result | {
        "label": label.decode() if isinstance(label, bytes) else str(label),
        "scores": {n: float(s) for n, s in zip(names, scores, strict=False)},
    }
