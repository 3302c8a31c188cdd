"""The Open Inference Protocol v2 over HTTP/REST on serve's HTTP port, checked with Triton's
`tritonclient.http` (its own venv, .cache/tritonclient, made by `make install`) and with plain
HTTP requests: same answers as OIP over gRPC, same batcher, and the bearer token on every
path but the probes. (Bad input: tests/e2e/test_errors.py; TLS: tests/e2e/test_tls.py.)"""

import json
import os
import struct
import subprocess

import grpc
import numpy as np
import pytest
from rest_client import http_call

from cookline import channels
from cookline.config import http_address
from cookline.v1 import serve_pb2, serve_pb2_grpc
from helpers import ROOT, SUPPORT
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc as oip_grpc

TRITON_PYTHON = os.path.join(ROOT, ".cache", "tritonclient", "bin", "python")
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.5, 5.0, 1.9]], np.float32)
TOKEN = "rest-t0ken-for-tests"
STACK_ENV = {"COOKLINE_AUTH_TOKEN": TOKEN}  # the `stack` fixture adds it to every service


@pytest.fixture(scope="module")
def oip_grpc_stub(env):
    return oip_grpc.GRPCInferenceServiceStub(channels.channel("serve", env))


def grpc_infer(stub, datatype="FP32", version="") -> oip.ModelInferResponse:
    """OIP ModelInfer over gRPC of ROWS (FP32, or BYTES of the same numbers as decimal strings)."""
    request = oip.ModelInferRequest(model_name="iris", model_version=version)
    tensor = request.inputs.add(name="features", datatype=datatype, shape=ROWS.shape)
    if datatype == "BYTES":
        tensor.contents.bytes_contents.extend(str(v).encode() for v in ROWS.reshape(-1).tolist())
    else:
        request.raw_input_contents.append(ROWS.tobytes())
    return stub.ModelInfer(request, timeout=30)


def answers(response: oip.ModelInferResponse) -> dict:
    """scores and labels of an OIP gRPC response, as the REST clients report them."""
    raw = dict(zip((o.name for o in response.outputs), response.raw_output_contents, strict=True))
    labels, pos = [], 0
    while pos < len(raw["label"]):
        (n,) = struct.unpack_from("<I", raw["label"], pos)
        labels.append(raw["label"][pos + 4 : pos + 4 + n].decode())
        pos += 4 + n
    return {"scores": np.frombuffer(raw["scores"], "<f4").reshape(len(ROWS), -1), "label": labels}


@pytest.fixture(scope="module")
def grpc_answer(oip_grpc_stub, iris):
    return answers(grpc_infer(oip_grpc_stub))


@pytest.fixture(scope="module")
def triton(env, iris):
    assert os.path.exists(TRITON_PYTHON), "tritonclient venv missing: run `make install`"
    done = subprocess.run(
        [
            TRITON_PYTHON,
            os.path.join(SUPPORT, "oip_http_client.py"),
            http_address("serve", env),
            "iris",
            str(iris.version),
            json.dumps(ROWS.tolist()),
            TOKEN,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def rest(env, method, path, doc=None, **kw):
    body = json.dumps(doc).encode() if doc is not None else kw.pop("body", b"")
    status, headers, raw = http_call(env, "serve", method, path, body, kw.pop("headers", None), **kw)
    return status, headers, raw


def test_tritonclient_http_metadata_and_health(triton, oip_grpc_stub, iris):
    assert triton["live"] and triton["ready"] and triton["model_ready"] and triton["version_ready"]
    assert triton["server"]["name"] == "cookline" and "binary_tensor_data" in triton["server"]["extensions"]
    meta = oip_grpc_stub.ModelMetadata(oip.ModelMetadataRequest(name="iris"), timeout=30)
    expected = {
        "name": "iris",
        "versions": [str(iris.version)],
        "platform": meta.platform,
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.inputs],
        "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.outputs],
    }
    for got in (triton["metadata"], triton["version_metadata"]):
        got = got | {"inputs": [{k: v for k, v in t.items() if k != "parameters"} for t in got["inputs"]]}
        assert got == expected
    assert expected["inputs"][0] == {"name": "features", "datatype": "FP32", "shape": [-1, 4]}


def test_tritonclient_http_infer_equals_grpc(triton, grpc_answer, iris):
    for key in ("binary", "json", "version_infer"):
        got = triton[key]
        assert np.array_equal(np.asarray(got["scores"], np.float32), grpc_answer["scores"]), key
        assert got["label"] == grpc_answer["label"], key
        assert got["version"] == str(iris.version)
    assert grpc_answer["label"][:2] == ["setosa", "virginica"]
    assert triton["binary"]["id"] == triton["json"]["id"] == "r1"


def test_bytes_inputs_answer_as_grpc_does(triton, oip_grpc_stub):
    """BYTES tensors (JSON strings, and binary with 4-byte lengths) reach the same conversion as
    gRPC's: the same scores, or the same error, whichever serve's input rules give."""
    try:
        expected = answers(grpc_infer(oip_grpc_stub, "BYTES"))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        for key in ("bytes_json", "bytes_binary"):
            assert triton[key]["status"] == "400" and triton[key]["message"] == exc.details(), key
        return
    for key in ("bytes_json_result", "bytes_binary_result"):
        assert np.array_equal(np.asarray(triton[key]["scores"], np.float32), expected["scores"]), key
        assert triton[key]["label"] == expected["label"]


def test_tritonclient_http_errors(triton):
    assert triton["bad_dtype"]["status"] == "400" and "inputs['features']" in triton["bad_dtype"]["message"]
    assert triton["unknown_model"]["status"] == "404" and "model 'nosuch'" in triton["unknown_model"]["message"]
    assert triton["unknown_version"]["status"] == "404" and "999" in triton["unknown_version"]["message"]
    assert triton["no_token"]["status"] == "401"


def test_plain_http_json_nested_and_flat_binary_and_versioned(env, grpc_answer, iris):
    path = "/v2/models/iris/infer"
    for data in (ROWS.tolist(), ROWS.reshape(-1).tolist()):
        status, headers, body = rest(
            env,
            "POST",
            path,
            {"id": "a", "inputs": [{"name": "features", "datatype": "FP32", "shape": [4, 4], "data": data}]},
        )
        assert status == 200 and headers["content-type"] == "application/json", body
        doc = json.loads(body)
        assert doc["id"] == "a" and doc["model_name"] == "iris" and doc["model_version"] == str(iris.version)
        scores, label = doc["outputs"]
        assert scores["name"] == "scores" and scores["datatype"] == "FP32" and scores["shape"] == [4, 3]
        assert np.array_equal(np.asarray(scores["data"], np.float32).reshape(4, 3), grpc_answer["scores"])
        assert label == {"name": "label", "datatype": "BYTES", "shape": [4], "data": grpc_answer["label"]}

    # the binary extension by hand: JSON header, then the raw little-endian rows; scores back as binary
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": [4, 4],
                    "parameters": {"binary_data_size": ROWS.nbytes},
                }
            ],
            "outputs": [{"name": "scores", "parameters": {"binary_data": True}}],
        }
    ).encode()
    status, headers, body = rest(
        env,
        "POST",
        f"/v2/models/iris/versions/{iris.version}/infer",
        body=header + ROWS.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert status == 200, body
    length = int(headers["inference-header-content-length"])
    doc = json.loads(body[:length])
    assert doc["outputs"] == [
        {"name": "scores", "datatype": "FP32", "shape": [4, 3], "parameters": {"binary_data_size": 4 * 4 * 3}}
    ]
    assert np.array_equal(np.frombuffer(body[length:], "<f4").reshape(4, 3), grpc_answer["scores"])


def test_plain_http_health_ready_and_metadata(env, iris):
    assert json.loads(rest(env, "GET", "/v2/health/live")[2]) == {"live": True}
    assert rest(env, "GET", "/v2/health/ready")[0] == 200
    assert rest(env, "GET", "/v2/models/iris/ready")[0] == 200
    assert rest(env, "GET", f"/v2/models/iris/versions/{iris.version}/ready")[0] == 200
    status, _, body = rest(env, "GET", "/v2/models/iris/versions/999/ready")
    assert status == 503 and json.loads(body)["ready"] is False
    status, _, body = rest(env, "GET", "/v2")
    assert status == 200 and json.loads(body)["name"] == "cookline"


def test_the_token_guards_every_path_but_the_probes(env, iris):
    row = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": ROWS[0].tolist()}]}
    for method, path, doc in (
        ("POST", "/v2/models/iris/infer", row),
        ("GET", "/v2/models/iris", None),
        ("GET", "/v2", None),
        ("GET", "/v2/models/iris/ready", None),
    ):
        status, headers, body = rest(env, method, path, doc, token=False)
        assert status == 401 and "bearer token" in json.loads(body)["error"], path
        assert headers.get("www-authenticate") == "Bearer"
        status, _, body = rest(env, method, path, doc, headers={"Authorization": "Bearer wrong"}, token=False)
        assert status == 401, path
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert rest(env, "GET", path, token=False)[0] == 200


def test_rest_requests_go_through_the_models_batcher(env, iris):
    """REST and gRPC share serve's batcher: a REST request shows in the model's stats."""
    serve = serve_pb2_grpc.ServeServiceStub(channels.channel("serve", env))

    def requests():
        stats = serve.GetStats(serve_pb2.GetStatsRequest(name="iris"), timeout=30).models
        return sum(s.requests for s in stats), sum(s.rows for s in stats)

    before = requests()
    status, _, body = rest(
        env,
        "POST",
        "/v2/models/iris/infer",
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [4, 4], "data": ROWS.tolist()}]},
    )
    assert status == 200, body
    after = requests()
    assert after[0] == before[0] + 1 and after[1] == before[1] + len(ROWS)
