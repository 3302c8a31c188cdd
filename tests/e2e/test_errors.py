"""Runs every case of the bad-input catalogue (docs/errors.md) against the live stack."""

import json
import types

import grpc
import pytest
from rest_client import http_call

import raw_models
from cookline.client import Client
from cookline.config import address
from cookline.v1 import (
    collect_pb2_grpc,
    gateway_pb2,
    model_pb2,
    process_pb2_grpc,
    serve_pb2,
    serve_pb2_grpc,
    train_pb2_grpc,
)
from error_catalogue import CASES, HTTP_CASES
from helpers import IRIS_YAML
from services.common.store import store_from_env


@pytest.fixture(scope="module")
def ctx(stack, tmp_path_factory):
    """Stubs for every service, with iris trained and served (the serve and registry cases need it),
    and two raw-input models published and loaded: "raw" (numbers, categories, text, images)
    and "pics" (images)."""
    env = stack[1]
    client = Client(env=env)
    assert client.run_file_and_wait(IRIS_YAML)[0].state == gateway_pb2.RUN_STATE_SUCCEEDED

    def channel(service):
        return grpc.insecure_channel(address(service, env))

    serve = serve_pb2_grpc.ServeServiceStub(channel("serve"))
    store = store_from_env(env)
    for name, inputs in (("raw", ("features", "categorical", "text", "image")), ("pics", ("image",))):
        raw_models.publish_mixed(store, name, inputs)
        serve.LoadModel(serve_pb2.LoadModelRequest(model=model_pb2.ModelRef(name=name)), timeout=180)
    yield types.SimpleNamespace(
        pipelines=client.pipelines,
        registry=client.registry,
        serve=serve,
        collect=collect_pb2_grpc.CollectServiceStub(channel("collect")),
        process=process_pb2_grpc.ProcessServiceStub(channel("process")),
        train=train_pb2_grpc.TrainServiceStub(channel("train")),
        store=store,
        scratch=str(tmp_path_factory.mktemp("bad-inputs")),
    )
    client.close()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.service}-{c.rpc}-{i}" for i, c in enumerate(CASES, start=1)])
def test_bad_input(ctx, case):
    with pytest.raises(grpc.RpcError) as info:
        case.call(ctx)
    assert info.value.code() == case.code, info.value.details()
    assert case.message in info.value.details()


@pytest.mark.parametrize("case", HTTP_CASES, ids=[f"http-{c.service}-{i}" for i, c in enumerate(HTTP_CASES, start=1)])
def test_bad_http_input(stack, ctx, case):
    status, headers, body = http_call(
        stack[1],
        case.service,
        case.method,
        case.path,
        case.body,
        dict(case.headers),
        declared_length=case.declared_length,
    )
    assert status == case.status, body
    assert headers.get("content-type") == "application/json"
    assert case.message in json.loads(body)["error"]
