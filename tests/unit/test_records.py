"""Typed store records (protos/cookline/v1/records.proto) through services/common/layout.py:
written as protobuf JSON, read back as messages, and the plain-JSON records of earlier
versions still load. A local store; no server process."""

import json

from google.protobuf import json_format

from cookline.v1 import records_pb2, serve_pb2
from services.common import layout


def test_deployed_and_alias_records_round_trip(local_store):
    record = records_pb2.DeployedRecord(
        policy="alias",
        version=3,
        alias="production",
        batching=serve_pb2.BatchingConfig(max_batch_size=64, max_queue_delay_ms=2),
    )
    layout.write_deployed(local_store, "iris", record)
    back = layout.read_deployed(local_store, "iris")
    assert (back.policy, back.version, back.alias, back.batching.max_batch_size) == ("alias", 3, "production", 64)
    assert back.updated_at.endswith("Z")
    stored = json.loads(local_store.get_bytes("models/iris/deployed.json"))
    assert stored["policy"] == "alias" and stored["batching"]["max_queue_delay_ms"] == 2  # proto field names
    assert stored["version"] == 3  # a JSON number, as the records before records.proto had
    assert layout.deployed_version(local_store, "iris") == 3 and layout.deployed_models(local_store) == ["iris"]
    layout.delete_deployed(local_store, "iris")
    assert layout.read_deployed(local_store, "iris") is None and layout.deployed_version(local_store, "iris") == 0


def test_records_of_earlier_versions_still_load(local_store):
    """Before records.proto: json.dumps of plain dicts (ints as numbers, extra keys possible)."""
    local_store.put_bytes(
        "models/iris/deployed.json",
        json.dumps(
            {
                "policy": "version",
                "version": 2,
                "alias": "",
                "batching": {"max_batch_size": 32, "max_queue_delay_ms": 0},
                "updated_at": "2026-01-01T00:00:00.000Z",
            },
            indent=1,
        ).encode(),
    )
    local_store.put_bytes(
        "models/iris/aliases/stable.json", json.dumps({"version": 1, "updated_at": "2026-01-01T00:00:00.000Z"}).encode()
    )
    local_store.put_bytes("models/iris/aliases/next.json", json.dumps({"version": 2, "note": "newer field"}).encode())
    record = layout.read_deployed(local_store, "iris")
    assert (record.policy, record.version, record.batching.max_batch_size) == ("version", 2, 32)
    assert layout.read_alias(local_store, "iris", "stable") == 1
    assert layout.aliases(local_store, "iris") == {"stable": 1, "next": 2}


# -- the model record (cookline.json) --------------------------------------------------------

# cookline.json as train wrote it before raw inputs: "features" without kind, dtype or columns
# (they are in feature_columns), no checksums, formats, task or outputs, "evaluation": null.
BEFORE_RAW_INPUTS = {
    "name": "iris",
    "version": 1,
    "class_names": ["setosa", "versicolor", "virginica"],
    "feature_columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
    "inputs": {"features": {"shape": [-1, 4]}},
    "metrics": {"loss": 0.25, "accuracy": 0.9},
    "evaluation": None,
    "process": [{"standardize": {}}],
    "dataset": {"name": "iris", "version": "4f2a"},
    "run_id": "r-1",
    "pipeline": {"name": "iris", "train": {"model": "mlp", "epochs": 3}},
    "framework": {"tensorflow": "2.21.0", "keras": "3.15.0"},
    "created_at": "2026-01-01T00:00:00.000Z",
    "a_key_from_a_newer_version": {"ignored": True},
}

# cookline.json with raw inputs but before checksums: "checksums": null (or no key at all).
BEFORE_CHECKSUMS = {
    "name": "pics",
    "version": 3,
    "class_names": [],
    "feature_columns": [],
    "inputs": {"image": {"dtype": "string", "shape": [-1], "kind": "image", "image": {"height": 8, "width": 8}}},
    "outputs": {"scores": {"dtype": "float32", "shape": [-1, 1]}},
    "task": "regression",
    "formats": ["saved_model", "tfjs"],
    "checksums": None,
}


def test_a_model_record_from_before_raw_inputs_loads_with_the_documented_defaults(local_store):
    local_store.put_bytes("models/iris/1/cookline.json", json.dumps(BEFORE_RAW_INPUTS, indent=1).encode())
    record = layout.read_model_record(local_store, "iris", 0)  # 0: the newest published version
    assert isinstance(record, records_pb2.ModelRecord) and (record.name, record.version) == ("iris", 1)
    features = record.inputs.features
    assert (features.kind, features.dtype, list(features.shape)) == ("numeric", "float32", [-1, 4])
    assert list(features.columns) == BEFORE_RAW_INPUTS["feature_columns"]  # from feature_columns
    assert [f.name for f, _ in record.inputs.ListFields()] == ["features"]
    assert not record.checksums  # read unverified
    assert list(record.formats) == ["saved_model"] and record.task == "classification"
    assert list(record.outputs.scores.shape) == [-1, 3] and list(record.outputs.label.shape) == [-1]
    assert not record.HasField("evaluation") and not record.HasField("base")
    assert record.process[0].WhichOneof("kind") == "standardize" and record.pipeline.train.epochs == 3
    assert (record.dataset.name, record.dataset.version, record.run_id) == ("iris", "4f2a", "r-1")
    assert dict(record.metrics) == {"loss": 0.25, "accuracy": 0.9}


def test_a_model_record_from_before_checksums_loads_unverified(local_store, tmp_path):
    without_key = {k: v for k, v in BEFORE_CHECKSUMS.items() if k != "checksums"}
    for record in (layout.parse_model_record(json.dumps(BEFORE_CHECKSUMS)), layout.parse_model_record(without_key)):
        assert not record.checksums
        image = record.inputs.image
        assert (image.kind, image.dtype, list(image.encodings)) == ("image", "string", ["png", "jpeg", "gif", "bmp"])
        assert (image.image.height, image.image.channels) == (8, 0)
        assert record.task == "regression" and list(record.formats) == ["saved_model", "tfjs"]
        assert not record.inputs.HasField("features")
    # without checksums, every file of the version is downloaded as it is
    local_store.put_bytes("models/pics/3/saved_model.pb", b"graph")
    local_store.put_bytes("models/pics/3/cookline.json", json.dumps(BEFORE_CHECKSUMS).encode())
    layout.download_model(local_store, layout.read_model_record(local_store, "pics", 3), "models/pics/3/", tmp_path)
    assert (tmp_path / "saved_model.pb").read_bytes() == b"graph"


def test_a_published_model_record_keeps_the_keys_its_readers_index(local_store):
    """The keys, number types and empty values of cookline.json as train wrote it by hand before
    records.proto: TF.js, Node, Go and docs readers index them."""
    record = records_pb2.ModelRecord(
        class_names=[],
        metrics={"loss": 0.5},
        process=[],
        dataset={"name": "houses", "version": "ab12"},
        run_id="r-2",
        pipeline={"name": "houses"},
        formats=["saved_model"],
        task="regression",
    )
    record.inputs.features.CopyFrom(
        records_pb2.InputRecord(dtype="float32", shape=[-1, 2], kind="numeric", columns=["a", "b"])
    )
    record.outputs.scores.CopyFrom(records_pb2.OutputRecord(dtype="float32", shape=[-1, 1]))
    with layout.claim_model_version(local_store, "houses", "r-2") as claim:
        version = layout.publish_model(local_store, claim, record, {"saved_model.pb": b"graph"})
    on_disk = json.loads(local_store.get_bytes(f"models/houses/{version}/cookline.json"))
    assert set(BEFORE_RAW_INPUTS) - {"a_key_from_a_newer_version"} <= set(on_disk)
    assert on_disk["version"] == 1 and on_disk["class_names"] == [] and on_disk["evaluation"] is None
    assert on_disk["inputs"] == {
        "features": {"dtype": "float32", "shape": [-1, 2], "kind": "numeric", "columns": ["a", "b"]}
    }
    assert on_disk["outputs"]["scores"]["shape"] == [-1, 1] and on_disk["dataset"] == {
        "name": "houses",
        "version": "ab12",
    }
    assert on_disk["checksums"] == {"saved_model.pb": layout.sha256_of(b"graph")} and on_disk["base"] is None
    # a fine-tuned model's lineage: the base model as train.base records it
    record.base.CopyFrom(
        json_format.ParseDict({"model": "houses", "version": 1, "uri": "models/houses/1/"}, records_pb2.BaseModel())
    )
    with layout.claim_model_version(local_store, "houses") as claim:
        version = layout.publish_model(local_store, claim, record, {"saved_model.pb": b"graph 2"})
    assert json.loads(local_store.get_bytes(f"models/houses/{version}/cookline.json"))["base"] == {
        "model": "houses",
        "version": 1,
        "uri": "models/houses/1/",
    }
    assert layout.read_model_record(local_store, "houses", version).base.version == 1


def test_a_read_counts_the_rows_of_a_manifest_without_its_column_statistics():
    """layout.dataset_counts (what ReadDataset parses) gives every subset the rows the whole
    DatasetInfo gives, for a seeded split and a predefined one."""
    from cookline.v1 import data_pb2
    from services.collect.ingest import manifest_bytes
    from services.common import splits

    stats = data_pb2.DatasetStatistics(
        numeric=[data_pb2.NumericStatistics(name=f"c{i}", mean=i) for i in range(50)],
        label_counts={"a": 70, "b": 30},
        split_counts={"train": 60, "validation": 25, "test": 15},
    )
    split = data_pb2.SplitSpec(validation=0.2, test=0.1, seed=3)
    for predefined in (False, True):
        info = data_pb2.DatasetInfo(num_rows=100, predefined_split=predefined, statistics=stats)
        manifest = json.loads(manifest_bytes(info, [{"key": "shard-0.npz", "rows": 100}]))
        slim = layout.dataset_counts(manifest)
        assert not slim.statistics.numeric  # the column statistics are not parsed
        assert splits.subset_rows(slim, split) == splits.subset_rows(layout.dataset_info(manifest), split)
    assert splits.subset_rows(slim, split)[data_pb2.SUBSET_VALIDATION] == 25  # the predefined folders' counts
