"""Bearer-token auth on every service, bounded concurrency, and no secret in any log."""

import os
import queue

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cookline.client import Client
from cookline.stack import Stack
from cookline.v1 import collect_pb2, collect_pb2_grpc, data_pb2, gateway_pb2, model_pb2, serve_pb2, serve_pb2_grpc
from helpers import IRIS_YAML, free_ports

TOKEN = "s3cr3t-t0ken-for-tests"
# The `stack` fixture adds these to every service's environment.
STACK_ENV = {"COOKLINE_AUTH_TOKEN": TOKEN}


def collect_stub(env, metadata=None):
    channel = grpc.insecure_channel(env["COOKLINE_COLLECT_ADDR"])
    return collect_pb2_grpc.CollectServiceStub(channel), channel


@pytest.mark.parametrize("header", [None, ("authorization", "Bearer wrong"), ("authorization", TOKEN)])
def test_calls_without_the_right_token_are_unauthenticated(stack, header):
    _, env = stack
    stub, channel = collect_stub(env)
    metadata = [header] if header else None
    for call in (
        lambda: stub.GetDataset(
            collect_pb2.GetDatasetRequest(dataset=data_pb2.DatasetRef(name="x")), metadata=metadata, timeout=10
        ),
        lambda: list(
            stub.ReadDataset(
                collect_pb2.ReadDatasetRequest(dataset=data_pb2.DatasetRef(name="x")), metadata=metadata, timeout=10
            )
        ),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and "bearer token" in info.value.details()
    # probes stay open
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_the_pipeline_runs_with_the_token_on_every_hop_and_no_secret_reaches_a_log(stack):
    services, env = stack
    with Client(env=env) as client:  # env carries COOKLINE_AUTH_TOKEN: the client sends it
        final, _ = client.run_file_and_wait(IRIS_YAML)
        assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED, final.reason
        assert client.predict("iris", [[5.1, 3.5, 1.4, 0.2]])[0]["label"] == "setosa"
    with Client(env={k: v for k, v in env.items() if k != "COOKLINE_AUTH_TOKEN"}) as anonymous:
        with pytest.raises(grpc.RpcError) as info:
            anonymous.get_run(final.run_id)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    secrets = [env["MINIO_SECRET_KEY"], TOKEN]
    logs = [os.path.join(services.log_dir, f) for f in os.listdir(services.log_dir)]
    assert len(logs) == 5
    for path in logs:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        assert text  # the services did log
        for secret in secrets:
            assert secret not in text, f"a secret appears in {os.path.basename(path)}"


def test_calls_over_the_concurrency_cap_are_refused_not_queued(tmp_path, stack):
    """serve with COOKLINE_MAX_CONCURRENT_RPCS=2: two open prediction streams fill it; the
    third call gets RESOURCE_EXHAUSTED at once; once a stream closes, calls pass again."""
    _, stack_env = stack
    port, http_port = free_ports(2, set())
    env = dict(
        stack_env,
        COOKLINE_SERVE_ADDR=f"127.0.0.1:{port}",
        COOKLINE_SERVE_HTTP_ADDR=f"127.0.0.1:{http_port}",
        COOKLINE_MAX_CONCURRENT_RPCS="2",
    )
    env.pop("COOKLINE_AUTH_TOKEN")
    with Stack(env, log_dir=str(tmp_path / "logs")) as single:
        single.start("serve")
        single.wait_healthy(timeout=120)
        serve = serve_pb2_grpc.ServeServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        closers, streams = [], []
        for _ in range(2):
            requests: queue.Queue = queue.Queue()
            streams.append(serve.PredictStream(iter(requests.get, None)))
            closers.append(requests)
        # each stream is open once it answered one message
        for requests, stream in zip(closers, streams, strict=True):
            requests.put(
                serve_pb2.PredictStreamRequest(
                    correlation_id="a", request=serve_pb2.PredictRequest(model=model_pb2.ModelRef(name="nosuch"))
                )
            )
            assert next(stream).error.code == grpc.StatusCode.NOT_FOUND.value[0]
        with pytest.raises(grpc.RpcError) as info:
            serve.Predict(serve_pb2.PredictRequest(model=model_pb2.ModelRef(name="nosuch")), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        closers[0].put(None)
        assert list(streams[0]) == []
        with pytest.raises(grpc.RpcError) as info:
            serve.Predict(serve_pb2.PredictRequest(model=model_pb2.ModelRef(name="nosuch")), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND  # admitted again
        closers[1].put(None)
        list(streams[1])
