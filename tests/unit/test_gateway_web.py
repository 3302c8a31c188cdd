"""The gateway's raw-row -> PredictRequest conversion and answer shape (no servers)."""

import base64

import numpy as np
import pytest

from cookline import tensors
from cookline.v1 import model_pb2, serve_pb2, tensor_pb2
from gateway.web import predict
from services.common.http import HTTPFail

REF = model_pb2.ModelRef(name="m")


def metadata(**inputs) -> serve_pb2.ModelMetadata:
    meta = serve_pb2.ModelMetadata(model=REF, class_names=["no", "yes"])
    for name, (dtype, shape) in inputs.items():
        meta.inputs[name].dtype = dtype
        meta.inputs[name].shape[:] = shape
    return meta


F32, STR = tensor_pb2.DATA_TYPE_FLOAT32, tensor_pb2.DATA_TYPE_STRING


def test_a_numeric_model_takes_its_feature_columns_by_name_or_in_order():
    meta = metadata(features=(F32, [-1, 2]))
    meta.feature_columns[:] = ["a", "b"]
    assert predict.fields(meta) == [
        {"column": "a", "input": "features", "kind": "numeric"},
        {"column": "b", "input": "features", "kind": "numeric"},
    ]
    by_name = predict.request(REF, meta, {"b": "2.5", "a": 1})
    in_order = predict.request(REF, meta, [1, 2.5])
    for request in (by_name, in_order):
        values = tensors.to_numpy(request.inputs["features"])
        assert values.dtype == np.float32 and values.tolist() == [[1.0, 2.5]]


def test_category_text_and_image_inputs_are_strings_of_their_shapes():
    meta = metadata(categorical=(STR, [-1, 1]), text=(STR, [-1]), image=(STR, [-1]))
    png = b"\x89PNG\r\n\x1a\n..."
    row = {"categorical_0": "red", "text": "a fine day", "image": {"b64": base64.b64encode(png).decode()}}
    request = predict.request(REF, meta, row)
    assert tensors.to_numpy(request.inputs["categorical"]).tolist() == [[b"red"]]
    assert tensors.to_numpy(request.inputs["text"]).tolist() == [b"a fine day"]
    assert tensors.to_numpy(request.inputs["image"]).tolist() == [png]
    uploaded = predict.request(REF, meta, dict(row, image=png))  # a multipart file part
    assert tensors.to_numpy(uploaded.inputs["image"]).tolist() == [png]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"a": 1}, "row: column 'b' is missing"),
        ({"a": 1, "b": 2, "c": 3}, "row: unknown column 'c'"),
        ({"a": "x", "b": 2}, "row['a']: 'x' is not a number"),
        ({"a": float("nan"), "b": 2}, "row['a']: nan is not a finite number"),
        ({"a": True, "b": 2}, "row['a']: True is not a number"),
        ([1], "row: 1 values, the model takes 2"),
        ("1,2", "row: expected an object"),
    ],
)
def test_bad_rows_are_400_naming_the_column(row, message):
    meta = metadata(features=(F32, [-1, 2]))
    meta.feature_columns[:] = ["a", "b"]
    with pytest.raises(HTTPFail) as info:
        predict.request(REF, meta, row)
    assert info.value.status == 400 and message in info.value.message


def test_an_image_must_be_a_file_or_base64():
    meta = metadata(image=(STR, [-1]))
    for value, message in (
        ("cat.png", "an image is an uploaded file"),
        ({"b64": "@@"}, "not valid base64"),
        (b"", "the image is empty"),
    ):
        with pytest.raises(HTTPFail) as info:
            predict.request(REF, meta, {"image": value})
        assert message in info.value.message


def test_the_answer_is_label_and_scores_or_a_value():
    response = serve_pb2.PredictResponse(model=model_pb2.ModelRef(name="m", version=3), class_names=["no", "yes"])
    tensors.from_numpy(np.array([[0.25, 0.75]], np.float32), out=response.outputs["scores"])
    tensors.from_numpy(np.array([b"yes"], object), out=response.outputs["label"])
    assert predict.answer(response) == {
        "model": {"name": "m", "version": 3},
        "label": "yes",
        "scores": {"no": 0.25, "yes": 0.75},
    }
    del response.outputs["label"]
    assert predict.answer(response) == {"model": {"name": "m", "version": 3}, "value": 0.25}
