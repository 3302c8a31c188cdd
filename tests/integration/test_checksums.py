"""End-to-end checksums (docs/api.md, "Storage layout"): one flipped byte in a dataset shard, a model's
variables file or a training checkpoint is DATA_LOSS naming the object, on the local store and on S3
(SeaweedFS); nothing is streamed, served or resumed from the bad bytes. Records written before
checksums existed still load."""

from __future__ import annotations

import json
import os

import grpc
import keras
import numpy as np
import pytest

import raw_models as rm
from cookline import channels, tensors
from cookline.v1 import collect_pb2, model_pb2, serve_pb2, serve_pb2_grpc, train_pb2
from dataplane import collect_stub, ingest, read_all
from helpers import flip_byte, free_ports, unique_bucket, write_big_csv
from services.common import layout
from services.common.errors import status_of
from services.common.store import ChecksumError, sha256_of, store_from_env
from services.train import distributed
from services.train.checkpoints import Checkpoints

ROWS = 6000  # several ~50 KB shards


@pytest.fixture(params=["local", "s3"])
def backend(request, s3_server, tmp_path_factory) -> dict:
    """Environment for services and the test on one backend: a local store folder or an S3 bucket."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MINIO_") and k not in ("COOKLINE_DATA_DIR", "COOKLINE_BUCKET")
    }
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if request.param == "s3":
        env.update(s3_server.env(unique_bucket("sum")))
    else:
        env["COOKLINE_DATA_DIR"] = str(tmp_path_factory.mktemp("store"))
    env["_PORTS_TAKEN"] = ",".join(str(p) for p in s3_server.ports.values())
    return env


def start(env: dict, service: str, tmp_path):
    from cookline.stack import Stack

    (port,) = free_ports(1, {int(p) for p in env.pop("_PORTS_TAKEN", "").split(",") if p})
    env[f"COOKLINE_{service.upper()}_ADDR"] = f"127.0.0.1:{port}"
    running = Stack(env, log_dir=str(tmp_path / "logs"))
    running.start(service)
    try:
        running.wait_healthy(timeout=180)
    except BaseException:
        running.stop_all()
        raise
    return running


def test_a_flipped_shard_byte_is_data_loss_naming_the_shard_and_no_row_of_it_streams(backend, tmp_path):
    backend["COOKLINE_SHARD_MB"] = "0.05"
    store = store_from_env(backend)
    csv = tmp_path / "d.csv"
    write_big_csv(csv, ROWS)
    with start(backend, "collect", tmp_path):
        info = ingest(backend, "sums", str(csv), label="label").dataset
        prefix = layout.dataset_prefix("sums", info.ref.version)
        manifest = json.loads(store.get_bytes(prefix + layout.DATASET_MANIFEST))
        shards = manifest["shards"]
        assert len(shards) >= 3
        for shard in shards:  # the manifest carries each shard's sha256 of the bytes stored
            assert shard["sha256"] == sha256_of(store.get_bytes(prefix + shard["key"]))
        whole = read_all(backend, info.ref)
        assert len(whole["label"]) == ROWS

        bad = shards[1]
        flip_byte(store, prefix + bad["key"])
        request = collect_pb2.ReadDatasetRequest(dataset=info.ref, batch_size=64)
        streamed = 0
        with pytest.raises(grpc.RpcError) as error:
            for response in collect_stub(backend).ReadDataset(request, timeout=120):
                streamed += len(tensors.batch_to_numpy(response.batch)["label"])
        assert error.value.code() == grpc.StatusCode.DATA_LOSS
        assert prefix + bad["key"] in error.value.details()
        assert streamed <= shards[0]["rows"]  # rows of the shards before it only, none of the bad one

        # a manifest written before checksums existed (no "sha256") still reads, unverified
        flip_byte(store, prefix + bad["key"])  # flipped back: the bytes are the original ones again
        for shard in manifest["shards"]:
            del shard["sha256"]
        store.put_bytes(prefix + layout.DATASET_MANIFEST, json.dumps(manifest).encode())
        again = read_all(backend, info.ref)
        np.testing.assert_array_equal(again["features"], whole["features"])


def test_a_flipped_model_variables_byte_is_data_loss_and_the_model_is_not_served(backend, tmp_path):
    store = store_from_env(backend)
    for name in ("good", "bad"):
        rm.publish_mixed(store, name, inputs=("features",))
    rm.publish_mixed(store, "old", inputs=("features",), old_record=True)  # no checksums in its record
    prefix = layout.model_prefix("bad", 1)
    record = layout.read_model_record(store, "bad", 1)
    files = sorted(store.list(prefix))
    # every file of the version but the record itself has its sha256 in the record
    assert sorted(prefix + name for name in record.checksums) == [
        k for k in files if not k.endswith((layout.MODEL_METADATA, layout.MODEL_CLAIM))
    ]
    variables = next(k for k in files if "/variables/variables.data" in k)
    flip_byte(store, variables)
    with start(backend, "serve", tmp_path):
        stub = serve_pb2_grpc.ServeServiceStub(channels.channel("serve", backend))
        for name in ("good", "old"):
            stub.LoadModel(serve_pb2.LoadModelRequest(model=model_pb2.ModelRef(name=name)), timeout=180)
        with pytest.raises(grpc.RpcError) as error:
            stub.LoadModel(serve_pb2.LoadModelRequest(model=model_pb2.ModelRef(name="bad")), timeout=180)
        assert error.value.code() == grpc.StatusCode.DATA_LOSS
        assert variables in error.value.details()
        request = serve_pb2.PredictRequest(model=model_pb2.ModelRef(name="bad"))
        tensors.from_numpy(np.ones((1, 3), np.float32), out=request.inputs["features"])
        with pytest.raises(grpc.RpcError) as not_served:
            stub.Predict(request, timeout=60)
        assert not_served.value.code() != grpc.StatusCode.OK
        good = serve_pb2.PredictRequest(model=model_pb2.ModelRef(name="good"))
        tensors.from_numpy(np.ones((1, 3), np.float32), out=good.inputs["features"])
        assert stub.Predict(good, timeout=60).outputs["scores"].shape == [1, 2]


def test_a_flipped_checkpoint_byte_is_data_loss_and_the_run_does_not_resume_from_it(backend):
    store = store_from_env(backend)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    saving = Checkpoints(store, "run-sums")
    saving.save(model, 1, {"loss": 0.5})
    saving.close()
    assert saving.error is None
    record = json.loads(store.get_bytes("runs/run-sums/checkpoints/latest.json"))
    assert record["sha256"] == sha256_of(store.get_bytes(record["key"]))
    epoch, resumed, _metrics = Checkpoints(store, "run-sums").latest()
    assert epoch == 1
    np.testing.assert_array_equal(resumed.get_weights()[0], model.get_weights()[0])

    flip_byte(store, record["key"])
    with pytest.raises(ChecksumError) as error:
        Checkpoints(store, "run-sums").latest()
    assert status_of(error.value)[0] == grpc.StatusCode.DATA_LOSS
    assert record["key"] in str(error.value)

    # a checkpoint record written before checksums existed resumes unverified
    flip_byte(store, record["key"])
    del record["sha256"]
    store.put_bytes("runs/run-sums/checkpoints/latest.json", json.dumps(record).encode())
    assert Checkpoints(store, "run-sums").latest()[0] == 1


def test_a_flipped_checkpoint_byte_fails_a_resuming_distributed_worker_with_data_loss(backend, tmp_path):
    """A retried distributed run: every worker downloads the chief's checkpoint itself and verifies it
    before any collective starts, so bad bytes end the worker (and the attempt) with DATA_LOSS."""
    store = store_from_env(backend)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    saving = Checkpoints(store, "run-dist-sums")
    saving.save(model, 2, {"loss": 0.5})
    saving.close()
    record = json.loads(store.get_bytes("runs/run-dist-sums/checkpoints/latest.json"))
    flip_byte(store, record["key"])
    job = train_pb2.TrainWorkerRequest(
        train=train_pb2.TrainRequest(run_id="run-dist-sums"),
        workers=[f"127.0.0.1:{p}" for p in free_ports(2)],
        index=1,
        resume=train_pb2.TrainCheckpoint(epoch=2, key=record["key"], sha256=record["sha256"]),
    )
    backend.pop("_PORTS_TAKEN", None)
    with pytest.raises(Exception) as error:
        list(distributed.WorkerProcess(job, None, backend).events())
    assert status_of(error.value)[0] == grpc.StatusCode.DATA_LOSS
    assert record["key"] in str(error.value)
