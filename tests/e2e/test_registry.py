"""The model registry on the gateway: versions with metrics and lineage, aliases, deletion."""

import grpc
import pytest

from cookline.v1 import gateway_pb2, registry_pb2
from helpers import iris_pipeline

PIPELINE = iris_pipeline("reg", split="{validation: 0.2, seed: 4}", train="{model: mlp, epochs: 5, batch_size: 16}")


@pytest.fixture(scope="module")
def runs(client):
    """Two runs of the same pipeline: versions 1 and 2 of model `reg`, trained on one dataset version."""
    done = []
    for _ in range(2):
        done.append(client.run_and_wait(PIPELINE)[0])
    assert [r.state for r in done] == [gateway_pb2.RUN_STATE_SUCCEEDED] * 2, [r.reason for r in done]
    return done


def error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value


def test_versions_carry_metrics_and_lineage(client, runs):
    model = client.registry.GetModel(registry_pb2.GetModelRequest(name="reg")).model
    assert [v.version for v in model.versions] == [1, 2]
    for version, run in zip(model.versions, runs, strict=True):
        assert version.lineage.run_id == run.run_id
        assert version.lineage.dataset == run.dataset  # same content -> same dataset version
        assert version.lineage.pipeline.name == "reg" and version.lineage.pipeline.train.epochs == 5
        assert version.metrics["val_accuracy"] == pytest.approx(run.metrics["val_accuracy"])
        assert version.evaluation.rows == 30
        assert version.class_names and version.created_at
    assert runs[0].dataset.version == runs[1].dataset.version
    assert model.deployed_version == 2 and [v.deployed for v in model.versions] == [False, True]
    listed = client.registry.ListModels(registry_pb2.ListModelsRequest()).models
    assert "reg" in [m.name for m in listed]


def test_aliases_are_set_and_moved(client, runs):
    model = client.registry.SetAlias(registry_pb2.SetAliasRequest(name="reg", alias="production", version=1)).model
    assert dict(model.aliases) == {"production": 1} and list(model.versions[0].aliases) == ["production"]
    model = client.registry.SetAlias(registry_pb2.SetAliasRequest(name="reg", alias="production", version=2)).model
    assert dict(model.aliases) == {"production": 2}
    assert list(model.versions[0].aliases) == [] and list(model.versions[1].aliases) == ["production"]


def test_deleting_versions(client, store, runs):
    client.registry.SetAlias(registry_pb2.SetAliasRequest(name="reg", alias="staging", version=1))
    err = error(client.registry.DeleteModelVersion, registry_pb2.DeleteModelVersionRequest(name="reg", version=1))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "alias staging" in err.details()
    client.registry.SetAlias(registry_pb2.SetAliasRequest(name="reg", alias="staging", version=2))
    err = error(client.registry.DeleteModelVersion, registry_pb2.DeleteModelVersionRequest(name="reg", version=2))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "deployed" in err.details()
    model = client.registry.DeleteModelVersion(registry_pb2.DeleteModelVersionRequest(name="reg", version=1)).model
    assert [v.version for v in model.versions] == [2]
    assert list(store.list("models/reg/1/")) == []
    err = error(client.registry.DeleteModelVersion, registry_pb2.DeleteModelVersionRequest(name="reg", version=1))
    assert err.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "call, request_, code",
    [
        ("GetModel", registry_pb2.GetModelRequest(name="nosuch"), grpc.StatusCode.NOT_FOUND),
        ("GetModel", registry_pb2.GetModelRequest(name="../etc"), grpc.StatusCode.INVALID_ARGUMENT),
        ("SetAlias", registry_pb2.SetAliasRequest(name="reg", alias="prod", version=99), grpc.StatusCode.NOT_FOUND),
        (
            "SetAlias",
            registry_pb2.SetAliasRequest(name="reg", alias="../x", version=2),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "DeleteModelVersion",
            registry_pb2.DeleteModelVersionRequest(name="reg", version=0),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
def test_bad_registry_requests(client, runs, call, request_, code):
    assert error(getattr(client.registry, call), request_).code() == code
