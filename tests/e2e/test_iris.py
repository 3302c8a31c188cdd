"""End to end: iris through five real service processes on a real S3 server (SeaweedFS)."""

import json
import subprocess
import sys

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cookline import tensors
from cookline.config import address
from cookline.v1 import (
    collect_pb2,
    collect_pb2_grpc,
    data_pb2,
    gateway_pb2,
    model_pb2,
    pipeline_pb2,
    serve_pb2,
    serve_pb2_grpc,
)
from helpers import IRIS_CSV, IRIS_YAML, ROOT, iris_pipeline, iris_rows


@pytest.fixture(scope="module")
def iris_run(client):
    """Runs examples/iris.yaml through the gateway and returns (final run, all events)."""
    return client.run_file_and_wait(IRIS_YAML)


def stub(env, service, cls):
    return cls(grpc.insecure_channel(address(service, env)))


def test_iris_pipeline_succeeds_with_high_validation_accuracy(iris_run):
    run, events = iris_run
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    assert run.metrics["val_accuracy"] >= 0.9
    assert run.model.name == "iris" and run.model.version >= 1
    assert run.dataset.name == "iris" and run.dataset.version


def test_run_events_are_ordered_and_cover_every_stage_and_epoch(iris_run):
    run, events = iris_run
    assert [e.sequence for e in events] == list(range(len(events)))
    stages = [(e.stage.stage, e.stage.finished) for e in events if e.WhichOneof("event") == "stage"]
    assert stages == [
        (s, f)
        for s in (gateway_pb2.STAGE_COLLECT, gateway_pb2.STAGE_TRAIN, gateway_pb2.STAGE_SERVE)
        for f in (False, True)
    ]
    epochs = [e.train for e in events if e.WhichOneof("event") == "train"]
    assert [p.epoch for p in epochs] == list(range(1, 61))
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(epochs[-1].metrics)
    assert epochs[-1].metrics["loss"] < epochs[0].metrics["loss"]
    assert events[-1].WhichOneof("event") == "finished" and events[-1].finished.state == run.state


def test_watch_resumes_from_a_sequence_number(client, iris_run):
    run, events = iris_run
    tail = list(client.watch(run.run_id, from_sequence=5))
    assert [e.sequence for e in tail] == list(range(5, len(events)))


def test_run_is_recorded_in_the_store(store, iris_run):
    run, events = iris_run
    recorded = json.loads(store.get_bytes(f"runs/{run.run_id}/run.json"))
    assert recorded["state"] == "RUN_STATE_SUCCEEDED" and recorded["model"]["name"] == "iris"
    lines = store.get_bytes(f"runs/{run.run_id}/events.jsonl").decode().splitlines()
    assert len(lines) == len(events)


def test_dataset_manifest_and_shards_are_in_the_bucket(store, iris_run):
    run, _ = iris_run
    prefix = f"datasets/iris/{run.dataset.version}/"
    manifest = json.loads(store.get_bytes(prefix + "manifest.json"))
    assert manifest["num_rows"] == 150
    fields = {f["name"]: f for f in manifest["fields"]}
    assert fields["features"]["columns"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert sorted(fields["label"]["class_names"]) == ["setosa", "versicolor", "virginica"]
    keys = set(store.list(prefix))
    assert {prefix + s["key"] for s in manifest["shards"]} <= keys
    assert sum(s["rows"] for s in manifest["shards"]) == 150


def test_model_is_a_saved_model_with_its_metadata(store, iris_run):
    run, _ = iris_run
    prefix = f"models/iris/{run.model.version}/"
    keys = set(store.list(prefix))
    assert {prefix + "saved_model.pb", prefix + "cookline.json"} <= keys
    assert any(k.startswith(prefix + "variables/") for k in keys)
    meta = json.loads(store.get_bytes(prefix + "cookline.json"))
    assert sorted(meta["class_names"]) == ["setosa", "versicolor", "virginica"]
    assert meta["dataset"] == {"name": "iris", "version": run.dataset.version}
    assert meta["run_id"] == run.run_id and meta["metrics"]["val_accuracy"] >= 0.9


def test_reingesting_the_same_source_reuses_the_version(env, iris_run):
    run, _ = iris_run
    collect = stub(env, "collect", collect_pb2_grpc.CollectServiceStub)
    last = list(
        collect.Ingest(
            collect_pb2.IngestRequest(dataset="iris", source=pipeline_pb2.CollectSpec(source=IRIS_CSV, label="species"))
        )
    )[-1]
    assert last.reused and last.dataset.ref.version == run.dataset.version


def test_read_dataset_streams_the_split(env, iris_run):
    run, _ = iris_run
    collect = stub(env, "collect", collect_pb2_grpc.CollectServiceStub)
    split = data_pb2.SplitSpec(validation=0.2, seed=7)
    counts = {}
    for subset in (data_pb2.SUBSET_TRAIN, data_pb2.SUBSET_VALIDATION):
        batches = list(
            collect.ReadDataset(
                collect_pb2.ReadDatasetRequest(dataset=run.dataset, split=split, subset=subset, batch_size=16)
            )
        )
        assert [b.batch.sequence for b in batches] == list(range(len(batches)))
        assert all(len(b.batch.tensors["label"].content) // 4 <= 16 for b in batches)
        counts[subset] = sum(tensors.to_numpy(b.batch.tensors["label"]).shape[0] for b in batches)
    assert counts == {data_pb2.SUBSET_TRAIN: 120, data_pb2.SUBSET_VALIDATION: 30}


def test_served_model_takes_raw_features_unary(client, iris_run):
    features, labels = iris_rows()
    results = client.predict("iris", features)
    accuracy = np.mean([r["label"] == y for r, y in zip(results, labels, strict=True)])
    assert accuracy >= 0.9
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-4 for r in results)


def test_predict_stream_30_rows(client, iris_run):
    features, labels = iris_rows()
    picks = list(range(0, 150, 5))  # 30 rows across all three classes
    results = list(client.predict_stream("iris", [features[i] for i in picks]))
    assert [cid for cid, _, _ in results] == [str(i) for i in range(30)]
    assert all(error is None for _, _, error in results)
    accuracy = np.mean([result["label"] == labels[i] for (_, result, _), i in zip(results, picks, strict=True)])
    assert accuracy >= 0.9


def test_cli_run_and_predict_json(env, iris_run, tmp_path):
    cli = [sys.executable, "-m", "cookline.cli"]
    done = subprocess.run(
        cli + ["run", IRIS_YAML, "--output", "json"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["state"] == "RUN_STATE_SUCCEEDED" and record["metrics"]["val_accuracy"] >= 0.9
    sample = tmp_path / "rows.csv"
    with open(IRIS_CSV) as f:
        lines = f.read().splitlines()
    sample.write_text("\n".join([lines[0]] + lines[1:151:25]) + "\n")  # the label column is ignored
    for extra in ([], ["--stream"]):
        done = subprocess.run(
            cli + ["predict", "iris", "--input", str(sample), "--output", "json"] + extra,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        assert len(rows) == 6
        expected = [line.rsplit(",", 1)[1] for line in lines[1:151:25]]
        assert np.mean([r["label"] == y for r, y in zip(rows, expected, strict=True)]) >= 0.8
        assert set(rows[0]["scores"]) == {"setosa", "versicolor", "virginica"}


# --- bad input ------------------------------------------------------------------


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, **kwargs)
        if hasattr(result, "__iter__") and not hasattr(result, "DESCRIPTOR"):
            list(result)
    return info.value


def test_unknown_dataset_is_not_found(env):
    collect = stub(env, "collect", collect_pb2_grpc.CollectServiceStub)
    err = rpc_error(collect.GetDataset, collect_pb2.GetDatasetRequest(dataset=data_pb2.DatasetRef(name="nope")))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "nope" in err.details()
    err = rpc_error(
        collect.ReadDataset, collect_pb2.ReadDatasetRequest(dataset=data_pb2.DatasetRef(name="nope", version="abc"))
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_unknown_model_is_not_found(env):
    serve = stub(env, "serve", serve_pb2_grpc.ServeServiceStub)
    err = rpc_error(serve.Predict, serve_pb2.PredictRequest(model=model_pb2.ModelRef(name="nomodel")))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "nomodel" in err.details()


@pytest.mark.parametrize(
    "text, field",
    [
        ("name: t\ncollect: {source: x.csv, label: y, colour: red}\ntrain: {model: mlp}\n", "collect.colour"),
        ("name: t\ncollect: {label: y}\ntrain: {model: mlp}\n", "collect.source"),
    ],
)
def test_bad_pipeline_file_is_invalid_argument_naming_the_field(client, text, field):
    err = rpc_error(client.submit, text)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.details()


def test_wrong_feature_count_is_invalid_argument(env, client, iris_run):
    serve = stub(env, "serve", serve_pb2_grpc.ServeServiceStub)
    request = serve_pb2.PredictRequest(model=model_pb2.ModelRef(name="iris"))
    tensors.from_numpy(np.zeros((2, 3), np.float32), out=request.inputs["features"])
    err = rpc_error(serve.Predict, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "features" in err.details() and "3" in err.details() and "4" in err.details()
    # on a stream, the bad message gets an error and the stream goes on
    results = list(client.predict_stream("iris", [[5.1, 3.5, 1.4, 0.2], [1.0, 2.0], [6.2, 3.4, 5.4, 2.3]]))
    assert results[0][1]["label"] == "setosa" and results[2][1]["label"] == "virginica"
    assert results[1][1] is None and results[1][2].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "inputs['features']" in results[1][2].message


def test_missing_label_column_is_invalid_argument_and_leaves_no_dataset(env, client, store, tmp_path):
    bad = tmp_path / "flowers.csv"
    bad.write_text("a,b,kind\n1,2,x\n3,4,y\n")
    collect = stub(env, "collect", collect_pb2_grpc.CollectServiceStub)
    err = rpc_error(
        collect.Ingest,
        collect_pb2.IngestRequest(dataset="flowers", source=pipeline_pb2.CollectSpec(source=str(bad), label="species")),
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "collect.label" in err.details() and "species" in err.details()
    assert list(store.list("datasets/flowers/")) == []
    # through the gateway the run fails with the reason
    final, _ = client.run_and_wait(iris_pipeline("flowers", source=bad, process=None))
    assert final.state == gateway_pb2.RUN_STATE_FAILED
    assert "collect" in final.reason and "INVALID_ARGUMENT" in final.reason and "species" in final.reason
    assert list(store.list("datasets/flowers/")) == []


def test_bad_row_mid_file_leaves_no_dataset(env, store, tmp_path, monkeypatch):
    bad = tmp_path / "late.csv"
    good_rows = "\n".join(f"{i},{i * 2},c{i % 2}" for i in range(5000))
    bad.write_text("a,b,y\n" + good_rows + "\n1,oops,c0\n")
    collect = stub(env, "collect", collect_pb2_grpc.CollectServiceStub)
    err = rpc_error(
        collect.Ingest,
        collect_pb2.IngestRequest(dataset="late", source=pipeline_pb2.CollectSpec(source=str(bad), label="y")),
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "line 5002" in err.details() and "'b'" in err.details()
    assert list(store.list("datasets/late/")) == []


# --- every service: health, reflection --------------------------------------------

SERVICE_NAMES = {
    "gateway": "cookline.v1.PipelineService",
    "collect": "cookline.v1.CollectService",
    "process": "cookline.v1.ProcessService",
    "train": "cookline.v1.TrainService",
    "serve": "cookline.v1.ServeService",
}


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_health_and_reflection(env, service):
    channel = grpc.insecure_channel(address(service, env))
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE_NAMES[service]):
        assert (
            health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
            == health_pb2.HealthCheckResponse.SERVING
        )
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    reply = next(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in reply.list_services_response.service}
    assert {SERVICE_NAMES[service], "grpc.health.v1.Health"} <= names


# --- train's feed: first epoch streamed, later epochs from the cache -----------------


def test_train_feed_streams_once_then_reads_its_cache(env, iris_run):
    import threading

    from cookline.v1 import process_pb2, process_pb2_grpc
    from services.train.feed import EpochFeed, FeedSize

    run, _ = iris_run
    channel = grpc.insecure_channel(address("process", env))
    process = process_pb2_grpc.ProcessServiceStub(channel)
    process_raw = channel.unary_stream(
        "/cookline.v1.ProcessService/Process", request_serializer=process_pb2.ProcessRequest.SerializeToString
    )
    split = data_pb2.SplitSpec(validation=0.2, seed=7)
    fitted = process.Fit(process_pb2.FitRequest(dataset=run.dataset, split=split, ops=run.pipeline.process)).ops
    request = process_pb2.ProcessRequest(dataset=run.dataset, split=split, subset=data_pb2.SUBSET_TRAIN, ops=fitted)

    def epochs(budget, rows=None):
        feed = EpochFeed(
            process_raw,
            request,
            ("features", "float32", [4], "int32"),
            threading.Event(),
            FeedSize(16, rows=rows, budget_bytes=budget),
        ).start()
        # what model.fit iterates: steps() batches per epoch of one endless iterator, or one pass per epoch
        orders, data, steps = [], feed.dataset(), feed.steps()
        endless = iter(data) if steps else None
        for _ in range(3):
            epoch = [next(endless) for _ in range(steps)] if steps else list(data)
            batches = [(x.numpy(), y.numpy()) for x, y in epoch]
            assert all(len(y) == 16 for _, y in batches[:-1]) and 0 < len(batches[-1][1]) <= 16
            orders.append(np.concatenate([x for x, _ in batches]))
        return feed, orders

    cached, with_cache = epochs(1 << 30)
    gathering, gathered = epochs(1 << 30, rows=120)  # rows known: kept in TensorFlow, gathered by index
    streamed, without_cache = epochs(0)
    assert not cached.gathers() and gathering.gathers() and not streamed.gathers()
    assert gathering.steps() == 8 and cached.steps() is None  # 120 rows in batches of 16
    assert cached.epochs_streamed == 1 and gathering.epochs_streamed == 1 and streamed.epochs_streamed == 3
    for cached_epoch, gathered_epoch in zip(with_cache, gathered, strict=True):  # the same rows in the same order
        np.testing.assert_array_equal(cached_epoch, gathered_epoch)
    # A row count that disagrees with what process sends is an error, never a silently short epoch.
    from services.common.errors import Fail

    for rows, message in ((100, "more than the 100 rows"), (130, "sent 120 rows where this subset has 130")):
        feed = EpochFeed(
            process_raw,
            request,
            ("features", "float32", [4], "int32"),
            threading.Event(),
            FeedSize(16, rows=rows, budget_bytes=1 << 30),
        ).start()
        with pytest.raises(Fail, match=message):
            list(feed.order())
    for orders in (with_cache, without_cache):
        rows = [sorted(map(tuple, o.round(5).tolist())) for o in orders]
        assert len(orders[0]) == 120 and rows[0] == rows[1] == rows[2]  # same rows every epoch
        assert not np.array_equal(orders[0], orders[1])  # shuffled afresh each epoch
        np.testing.assert_allclose(orders[0].mean(axis=0), 0, atol=0.2)  # standardized
    assert sorted(map(tuple, with_cache[0].round(5).tolist())) == sorted(map(tuple, without_cache[0].round(5).tolist()))
