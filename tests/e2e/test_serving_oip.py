"""The Open Inference Protocol v2 on serve, checked with an independent third-party
client: Triton's `tritonclient` (its own venv, .cache/tritonclient, made by
`make install`), run as a separate program against the real serve process."""

import json
import os
import subprocess

import grpc
import numpy as np
import pytest

from cookline import channels, tensors
from cookline.config import address
from cookline.v1 import model_pb2, serve_pb2, serve_pb2_grpc
from helpers import ROOT, SUPPORT
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc as oip_grpc

TRITON_PYTHON = os.path.join(ROOT, ".cache", "tritonclient", "bin", "python")
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.5, 5.0, 1.9]], np.float32)


@pytest.fixture(scope="module")
def triton_output(env, iris):
    assert os.path.exists(TRITON_PYTHON), "tritonclient venv missing: run `make install`"
    done = subprocess.run(
        [
            TRITON_PYTHON,
            os.path.join(SUPPORT, "oip_client.py"),
            address("serve", env),
            "iris",
            json.dumps(ROWS.tolist()),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def cookline_predict(env, iris):
    serve = serve_pb2_grpc.ServeServiceStub(channels.channel("serve", env))
    req = serve_pb2.PredictRequest(model=model_pb2.ModelRef(name="iris"))
    tensors.from_numpy(ROWS, out=req.inputs["features"])
    response = serve.Predict(req, timeout=30)
    return tensors.to_numpy(response.outputs["scores"]), [
        v.decode() for v in tensors.to_numpy(response.outputs["label"])
    ]


def test_server_and_model_metadata(triton_output, iris):
    assert triton_output["live"] and triton_output["ready"] and triton_output["model_ready"]
    assert triton_output["server"]["name"] == "cookline"
    assert "model_stream_infer" in triton_output["server"]["extensions"]
    meta = triton_output["metadata"]
    assert meta["name"] == "iris" and meta["versions"] == [str(iris.version)]
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert [o["name"] for o in meta["outputs"]] == ["scores", "label"]


def test_unary_infer_equals_cookline_predict(triton_output, cookline_predict, iris):
    scores, labels = cookline_predict
    assert np.array_equal(np.asarray(triton_output["infer"]["scores"], np.float32), scores)
    assert triton_output["infer"]["label"] == labels and labels[:2] == ["setosa", "virginica"]
    assert triton_output["infer"]["version"] == str(iris.version)


def test_stream_infer_equals_cookline_predict_and_survives_a_bad_message(triton_output, cookline_predict):
    scores, labels = cookline_predict
    stream = triton_output["stream"]
    assert len(stream) == len(ROWS) + 1
    assert "INVALID_ARGUMENT" in stream[1]["error"] and "inputs['features']" in stream[1]["error"]
    good = [stream[0]] + stream[2:]
    assert [s["id"] for s in good] == [str(i) for i in range(len(ROWS))]
    # A stream's rows are batched with whatever else is queued, so they may run in another XLA batch bucket
    # than the 4-row call (docs/serving.md, compiled path): equal to float32 rounding, not bit for bit.
    np.testing.assert_allclose(np.asarray([s["scores"][0] for s in good], np.float32), scores, rtol=1e-5, atol=1e-7)
    assert [s["label"][0] for s in good] == labels


def test_errors_carry_grpc_status(triton_output):
    assert triton_output["bad_dtype"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert (
        "inputs['features']" in triton_output["bad_dtype"]["message"]
        and "INT64" in triton_output["bad_dtype"]["message"]
    )
    assert triton_output["unknown_model"]["status"] == "StatusCode.NOT_FOUND"


def test_oip_with_cookline_stubs_and_raw_contents(env, iris, cookline_predict):
    stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address("serve", env)))
    req = oip.ModelInferRequest(
        model_name="iris", id="x", outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name="scores")]
    )
    req.inputs.add(name="features", datatype="FP32", shape=ROWS.shape).contents.fp32_contents.extend(ROWS.reshape(-1))
    response = stub.ModelInfer(req, timeout=30)
    assert [o.name for o in response.outputs] == ["scores"] and response.id == "x"
    scores = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(ROWS.shape[0], 3)
    assert np.array_equal(scores, cookline_predict[0])
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelReady(oip.ModelReadyRequest(name="Bad Name"), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not stub.ModelReady(oip.ModelReadyRequest(name="iris", version="999"), timeout=10).ready
