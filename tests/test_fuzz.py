"""Fuzzing with hypothesis: arbitrary bytes and structures never crash the codec, the
pipeline-file parser or serve's Predict validation; they only give INVALID_ARGUMENT."""
import grpc
import numpy as np
import pytest
import yaml
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings, strategies as st

from cookline import tensors
from cookline.config import address
from cookline.v1 import gateway_pb2, model_pb2, serve_pb2, serve_pb2_grpc, tensor_pb2
from cookline.spec import SpecError, pipeline as pipeline_file
from services.common.errors import status_of

dims = st.lists(st.integers(min_value=-3, max_value=2 ** 62), max_size=5)
tensor_structures = st.builds(
    tensor_pb2.Tensor, dtype=st.integers(min_value=0, max_value=12), shape=dims,
    content=st.binary(max_size=64), string_values=st.lists(st.binary(max_size=8), max_size=6))


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
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["name", "collect", "source", "label", "format", "process", "standardize", "shuffle",
                         "buffer", "seed", "split", "validation", "test", "train", "model", "epochs",
                         "hidden_units", "batch_size", "learning_rate", "evaluate", "metric", "export",
                         "tfjs", "deploy_if_at_least", "x"]), inner, max_size=5),
    max_leaves=20)


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


# --- Predict on a live serve -----------------------------------------------------------

@pytest.fixture(scope="module")
def serve(stack):
    from cookline.client import Client
    import os
    env = stack[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with Client(env=env) as client:
        run = client.submit_file(os.path.join(root, "examples", "iris.yaml"))
        list(client.watch(run.run_id))
        assert client.get_run(run.run_id).state == gateway_pb2.RUN_STATE_SUCCEEDED
    return grpc.insecure_channel(address("serve", env))


requests = st.builds(
    serve_pb2.PredictRequest,
    model=st.builds(model_pb2.ModelRef, name=st.sampled_from(["iris", "iris", "Iris", "../x", ""]),
                    version=st.integers(min_value=-2, max_value=3)),
    inputs=st.dictionaries(st.sampled_from(["features", "features", "image", ""]), tensor_structures, max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests)
def test_predict_validation_survives_arbitrary_requests(serve, request_):
    try:
        serve_pb2_grpc.ServeServiceStub(serve).Predict(request_, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), \
            (exc.code(), exc.details())


def test_serve_is_still_healthy_after_the_fuzzing(serve):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    health = health_pb2_grpc.HealthStub(serve).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    request = serve_pb2.PredictRequest(model=model_pb2.ModelRef(name="iris"))
    tensors.from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32), out=request.inputs["features"])
    assert serve_pb2_grpc.ServeServiceStub(serve).Predict(request, timeout=30).outputs["label"].string_values == [b"setosa"]
