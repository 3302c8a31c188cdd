"""Fuzzing with hypothesis: arbitrary bytes and structures never crash the codec or the
pipeline-file parser; they only give INVALID_ARGUMENT (serve's Predict: tests/e2e/test_fuzz_serve.py)."""

import grpc
import yaml
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from cookline import tensors
from cookline.spec import SpecError
from cookline.spec import pipeline as pipeline_file
from cookline.v1 import tensor_pb2
from services.common.errors import status_of
from strategies import tensor_structures


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=256))
def test_codec_survives_arbitrary_bytes(data):
    try:
        tensor = tensor_pb2.Tensor.FromString(data)
    except DecodeError:
        return
    try:
        array = tensors.to_numpy(tensor)
    except tensors.TensorError:
        return
    assert array.shape == tuple(tensor.shape)


@settings(max_examples=500, deadline=None)
@given(tensor_structures)
def test_codec_survives_arbitrary_structures(tensor):
    try:
        array = tensors.to_numpy(tensor)
    except tensors.TensorError:
        return
    assert array.shape == tuple(tensor.shape)


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "collect",
                    "source",
                    "label",
                    "format",
                    "process",
                    "standardize",
                    "shuffle",
                    "buffer",
                    "seed",
                    "split",
                    "validation",
                    "test",
                    "train",
                    "model",
                    "epochs",
                    "hidden_units",
                    "batch_size",
                    "learning_rate",
                    "evaluate",
                    "metric",
                    "export",
                    "tfjs",
                    "deploy_if_at_least",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


def parse_or_invalid(text: str) -> None:
    try:
        pipeline_file.parse(text, "/tmp")
    except SpecError as exc:
        code, message = status_of(exc)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, message
        assert message


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_pipeline_parser_survives_arbitrary_text(text):
    parse_or_invalid(text)


@settings(max_examples=400, deadline=None)
@given(yaml_values)
def test_pipeline_parser_survives_arbitrary_structures(value):
    parse_or_invalid(yaml.safe_dump(value))
