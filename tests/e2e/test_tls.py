"""The iris pipeline fully over TLS: every service listens with a certificate signed by a CA
made in this test (openssl), and every hop (client -> gateway, gateway -> collect/train/serve,
train -> process -> collect, health checks) verifies it. A plaintext client gets nowhere."""

import http.client
import json
import os

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rest_client import http_call

from cookline import channels
from cookline.client import Client
from cookline.v1 import gateway_pb2
from helpers import IRIS_YAML, make_certificates


def STACK_ENV(tmp_path_factory):  # the stack fixture's hook
    return make_certificates(str(tmp_path_factory.mktemp("tls")))


def test_iris_pipeline_fully_over_tls(stack, tmp_path):
    services, env = stack
    for service in ("gateway", "collect", "process", "train", "serve"):
        with open(os.path.join(services.log_dir, f"{service}.log")) as f:
            assert "(TLS)" in f.read(), f"{service} is not listening with TLS"
    with Client(env=env) as client:
        final, events = client.run_file_and_wait(IRIS_YAML)
        assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED, final.reason
        assert events[-1].WhichOneof("event") == "finished"
        assert final.metrics["accuracy"] > 0.8
        answer = client.predict("iris", [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
        assert [row["label"] for row in answer] == ["setosa", "virginica"]
    # plaintext is refused: the port speaks only TLS
    plain = {k: v for k, v in env.items() if k != "COOKLINE_TLS_CA"}
    with Client(env=plain) as client, pytest.raises(grpc.RpcError) as info:
        client.pipelines.ListRuns(gateway_pb2.ListRunsRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # and a client trusting another CA does not accept the servers' certificate
    other = make_certificates(str(tmp_path))
    with open(other["COOKLINE_TLS_CA"], "rb") as f:
        wrong_ca = grpc.ssl_channel_credentials(root_certificates=f.read())
    with grpc.secure_channel(env["COOKLINE_GATEWAY_ADDR"], wrong_ca) as ch, pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    channels.wait_healthy(env["COOKLINE_SERVE_ADDR"], timeout=5, env=env)  # health over TLS


def test_serve_rest_speaks_only_https(stack):
    """Serve's OIP REST port listens with the same certificate: HTTPS verified against the CA
    answers; a plaintext HTTP request gets no HTTP answer at all."""
    services, env = stack
    with open(os.path.join(services.log_dir, "serve.log")) as f:
        assert "HTTP on https://" in f.read()
    status, _, body = http_call(env, "serve", "GET", "/v2")  # env has COOKLINE_TLS_CA: HTTPS, verified
    assert status == 200 and json.loads(body)["name"] == "cookline"
    plain = {k: v for k, v in env.items() if k != "COOKLINE_TLS_CA"}
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        http_call(plain, "serve", "GET", "/v2")
