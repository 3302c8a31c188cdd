"""Fuzzing serve with hypothesis: arbitrary Predict requests on a live serve only give INVALID_ARGUMENT
or NOT_FOUND, and serve stays healthy (the codec and parser fuzzing is tests/unit/test_fuzz.py)."""

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cookline import tensors
from cookline.client import Client
from cookline.config import address
from cookline.v1 import gateway_pb2, model_pb2, serve_pb2, serve_pb2_grpc
from helpers import IRIS_YAML
from strategies import tensor_structures


@pytest.fixture(scope="module")
def serve(stack):
    env = stack[1]
    with Client(env=env) as client:
        assert client.run_file_and_wait(IRIS_YAML)[0].state == gateway_pb2.RUN_STATE_SUCCEEDED
    return grpc.insecure_channel(address("serve", env))


requests = st.builds(
    serve_pb2.PredictRequest,
    model=st.builds(
        model_pb2.ModelRef,
        name=st.sampled_from(["iris", "iris", "Iris", "../x", ""]),
        version=st.integers(min_value=-2, max_value=3),
    ),
    inputs=st.dictionaries(st.sampled_from(["features", "features", "image", ""]), tensor_structures, max_size=2),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests)
def test_predict_validation_survives_arbitrary_requests(serve, request_):
    try:
        serve_pb2_grpc.ServeServiceStub(serve).Predict(request_, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (exc.code(), exc.details())


def test_serve_is_still_healthy_after_the_fuzzing(serve):
    health = health_pb2_grpc.HealthStub(serve).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    request = serve_pb2.PredictRequest(model=model_pb2.ModelRef(name="iris"))
    tensors.from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32), out=request.inputs["features"])
    response = serve_pb2_grpc.ServeServiceStub(serve).Predict(request, timeout=30)
    assert response.outputs["label"].string_values == [b"setosa"]
