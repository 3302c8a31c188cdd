"""The bad-input catalogue: every case is a row of docs/errors.md and a test
(tests/e2e/test_errors.py runs each against the live stack): CASES over gRPC,
HTTP_CASES over the services' HTTP ports (answered as JSON {"error": message}).

    .venv/bin/python tests/support/error_catalogue.py > docs/errors.md     # after changing a case
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np

from cookline import tensors
from cookline.v1 import (
    collect_pb2,
    data_pb2,
    gateway_pb2,
    model_pb2,
    pipeline_pb2,
    process_pb2,
    registry_pb2,
    serve_pb2,
    train_pb2,
)
from helpers import IRIS_CSV, flip_byte, iris_pipeline

GOOD = iris_pipeline("t", process=None)
IRIS = data_pb2.DatasetRef(name="iris")


@dataclass(frozen=True)
class Case:
    service: str  # which service answers
    rpc: str  # the RPC called
    bad_input: str  # what is wrong, in words
    code: grpc.StatusCode
    message: str  # a part of the status message (names the field, file, row)
    call: Callable  # call(ctx) makes the RPC; ctx has the stubs, the store and a scratch folder


def _predict(features, name="iris", input_name="features") -> serve_pb2.PredictRequest:
    request = serve_pb2.PredictRequest(model=model_pb2.ModelRef(name=name))
    tensors.from_numpy(features, out=request.inputs[input_name])
    return request


def _raw(name: str, **inputs) -> serve_pb2.PredictRequest:
    """A PredictRequest of raw values (strings, image bytes, numbers) by input name."""
    from cookline.client import raw_array

    request = serve_pb2.PredictRequest(model=model_pb2.ModelRef(name=name))
    for key, values in inputs.items():
        tensors.from_numpy(raw_array(values), out=request.inputs[key])
    return request


def _png(broken_body: bool = False) -> bytes:
    import raw_models  # TensorFlow loads only when a case runs

    png = raw_models.png(200)
    return png[:40] + b"\0" * 60 if broken_body else png


def _csv(ctx, name: str, text: str) -> str:
    path = os.path.join(ctx.scratch, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def _detection_data(ctx, fmt: str, objects=(), category_id: int = 1) -> str:
    """A one-image voc or coco folder in the scratch folder (an 8x8 PNG); objects: (name, x0, y0, x1, y1)."""
    from PIL import Image

    root = os.path.join(ctx.scratch, f"{fmt}-{len(os.listdir(ctx.scratch))}")
    os.makedirs(os.path.join(root, "images"))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(os.path.join(root, "images", "0.png"))
    if fmt == "coco":
        doc = {
            "images": [{"id": 1, "file_name": "0.png", "width": 8, "height": 8}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": category_id, "bbox": [0, 0, 4, 4]}],
            "categories": [{"id": 1, "name": "square"}],
        }
        with open(os.path.join(root, "instances.json"), "w") as f:
            json.dump(doc, f)
        return root
    os.makedirs(os.path.join(root, "annotations"))
    body = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
        "</bndbox></object>"
        for n, a, b, c, d in objects
    )
    with open(os.path.join(root, "annotations", "0.xml"), "w") as f:
        f.write(f"<annotation><filename>0.png</filename>{body}</annotation>")
    return root


def _ingest(ctx, path: str, label: str = "y", dataset: str = "bad", **spec):
    return list(
        ctx.collect.Ingest(
            collect_pb2.IngestRequest(
                dataset=dataset, source=pipeline_pb2.CollectSpec(source=path, label=label, **spec)
            )
        )
    )


def _submit(ctx, text: str):
    return ctx.pipelines.SubmitRun(gateway_pb2.SubmitRunRequest(pipeline=text), timeout=30)


def _rotten_worker_checkpoint(ctx):
    record = _rot_checkpoint(ctx, "20990101-000000-000010")
    request = train_pb2.TrainWorkerRequest(
        train=train_pb2.TrainRequest(run_id="20990101-000000-000010"),
        workers=["127.0.0.1:1", "127.0.0.1:2"],  # the worker fails before it reaches any collective
        index=1,
        resume=train_pb2.TrainCheckpoint(epoch=1, key=record["key"], sha256=record["sha256"]),
    )
    return list(ctx.train.TrainWorker(request, timeout=180))


INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
FAILED_PRECONDITION, DATA_LOSS = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.DATA_LOSS


def _rotten_shard(ctx):
    import json

    from services.common import layout

    info = _ingest(ctx, _csv(ctx, "rot.csv", "a,b,y\n1,2,x\n3,4,y\n"), dataset="rot")[-1].dataset
    prefix = layout.dataset_prefix("rot", info.ref.version)
    manifest = json.loads(ctx.store.get_bytes(prefix + layout.DATASET_MANIFEST))
    flip_byte(ctx.store, prefix + manifest["shards"][0]["key"])
    return list(ctx.collect.ReadDataset(collect_pb2.ReadDatasetRequest(dataset=info.ref), timeout=30))


def _rotten_model(ctx):
    import raw_models  # TensorFlow loads only when a case runs
    from services.common import layout

    version, _ = raw_models.publish_mixed(ctx.store, "rotten", ("features",))
    prefix = layout.model_prefix("rotten", version)
    flip_byte(ctx.store, next(k for k in ctx.store.list(prefix) if "/variables/variables.data" in k))
    return ctx.serve.LoadModel(serve_pb2.LoadModelRequest(model=model_pb2.ModelRef(name="rotten")), timeout=180)


def _train(ctx, dataset=IRIS, **train):
    """Train on `dataset` with the TrainSpec fields `train`."""
    spec = pipeline_pb2.PipelineSpec(name="t", train=pipeline_pb2.TrainSpec(**train))
    return list(ctx.train.Train(train_pb2.TrainRequest(dataset=dataset, pipeline=spec), timeout=120))


def _wide_base(ctx):
    """Train on iris (4 features) from a .keras base that takes 8."""
    import keras  # TensorFlow loads only when a case runs

    inputs = keras.Input((8,))
    base = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(5)(inputs)))
    path = os.path.join(ctx.scratch, "wide.keras")
    base.save(path)
    return _train(ctx, model="mlp", base=path)


def _flat_detector_base(ctx):
    """A detector on a one-image voc data set (8x8 scenes) from a .keras mlp that takes them: it has
    no convolution for the detector's backbone."""
    import keras  # TensorFlow loads only when a case runs

    source = _detection_data(ctx, "voc", [("square", 1, 1, 5, 5)])
    info = _ingest(ctx, source, "", "one-scene", format="voc")[-1].dataset
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    path = os.path.join(ctx.scratch, "flat.keras")
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(flat)).save(path)
    return _train(ctx, dataset=info.ref, model="detector", base=path)


def _imagenet_absent(ctx):
    """mobilenet_v2 with ImageNet weights on a small image folder, where no weights file is placed."""
    from PIL import Image

    for kind, shade in (("dark", 30), ("light", 220)):
        os.makedirs(os.path.join(ctx.scratch, "pics", kind), exist_ok=True)
        for i in range(2):
            Image.new("RGB", (32, 32), (shade + i,) * 3).save(os.path.join(ctx.scratch, "pics", kind, f"{i}.png"))
    info = _ingest(ctx, os.path.join(ctx.scratch, "pics"), "", "tiny-pics", format="image-folder")[-1].dataset
    return _train(ctx, info.ref, model="mobilenet_v2", weights="imagenet", input_size=96)


def _rot_checkpoint(ctx, run_id: str) -> dict:
    """A run's checkpoint whose stored bytes differ from the sha256 its record says; the record."""
    import hashlib
    import json

    prefix = f"runs/{run_id}/checkpoints/"
    data = b"a checkpoint that rotted after it was written"
    ctx.store.put_bytes(prefix + "epoch-00001.keras", data[:-1] + b"!")
    record = {"epoch": 1, "key": prefix + "epoch-00001.keras", "sha256": hashlib.sha256(data).hexdigest()}
    ctx.store.put_bytes(prefix + "latest.json", json.dumps(record).encode())
    return record


def _rotten_checkpoint(ctx):
    _rot_checkpoint(ctx, "20990101-000000-000009")
    return list(
        ctx.train.Train(
            train_pb2.TrainRequest(
                run_id="20990101-000000-000009",
                dataset=IRIS,
                pipeline=pipeline_pb2.PipelineSpec(name="t", train=pipeline_pb2.TrainSpec(model="mlp")),
            ),
            timeout=60,
        )
    )


PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED

CASES = [
    # --- gateway: PipelineService -------------------------------------------------------
    Case(
        "gateway",
        "SubmitRun",
        "pipeline file that is a YAML list",
        INVALID,
        "pipeline: expected a mapping",
        lambda c: _submit(c, "- a\n- b\n"),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "pipeline file that is not YAML",
        INVALID,
        "not valid YAML",
        lambda c: _submit(c, "name: [unclosed\n"),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "unknown field `train.epoch`",
        INVALID,
        "unknown field 'train.epoch'",
        lambda c: _submit(c, GOOD.replace("model: mlp", "model: mlp, epoch: 3")),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "missing `collect.source`",
        INVALID,
        "collect.source is required",
        lambda c: _submit(c, "name: t\ncollect: {label: y}\ntrain: {model: mlp}\n"),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "name that is a path (`../x`)",
        INVALID,
        "name: '../x' is not a valid name",
        lambda c: _submit(c, GOOD.replace("name: t", "name: ../x")),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "unknown model `gpt`",
        INVALID,
        "train.model: 'gpt' is not supported",
        lambda c: _submit(c, GOOD.replace("model: mlp", "model: gpt")),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "`train.base` naming no model in the registry",
        NOT_FOUND,
        "train.base: model 'nosuch' version 2 not found",
        lambda c: _submit(c, GOOD.replace("model: mlp", "model: mlp, base: 'nosuch:2'")),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "`train.base` naming an alias that does not exist",
        NOT_FOUND,
        "train.base: alias 'gone' of model 'iris' not found",
        lambda c: _submit(c, GOOD.replace("model: mlp", "model: mlp, base: iris@gone")),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "`train.base` file that does not exist",
        NOT_FOUND,
        "nosuch.keras' not found on the services' machine",
        lambda c: _submit(c, GOOD.replace("model: mlp", f"model: mlp, base: {c.scratch}/nosuch.keras")),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "`train.freeze` without a base",
        INVALID,
        "train.freeze: needs train.base or train.weights",
        lambda c: _submit(c, GOOD.replace("model: mlp", "model: mlp, freeze: 2")),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "`train.epochs` out of range (20000)",
        INVALID,
        "train.epochs: 20000 is not in",
        lambda c: _submit(c, GOOD.replace("model: mlp", "model: mlp, epochs: 20000")),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "unknown `train.optimizer`",
        INVALID,
        "train.optimizer: 'lbfgs' is not supported",
        lambda c: _submit(c, GOOD.replace("model: mlp", "model: mlp, optimizer: lbfgs")),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "`train.early_stopping` without patience",
        INVALID,
        "train.early_stopping.patience: 0 is not in",
        lambda c: _submit(c, GOOD.replace("model: mlp", "model: mlp, early_stopping: {metric: val_loss}")),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "negative class weight",
        INVALID,
        "train.class_weights['setosa']: -1.0",
        lambda c: _submit(c, GOOD.replace("model: mlp", "model: mlp, class_weights: {setosa: -1}")),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "`train.alpha` out of range (3)",
        INVALID,
        "train.alpha: 3.0 is not in (0, 2]",
        lambda c: _submit(c, GOOD.replace("model: mlp", "model: mobilenet_v2, alpha: 3")),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "`split.validation` of 1.5",
        INVALID,
        "split.validation: 1.5",
        lambda c: _submit(c, GOOD + "split: {validation: 1.5}\n"),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "unknown op `normalize`",
        INVALID,
        "unknown field 'process[0].normalize'",
        lambda c: _submit(c, GOOD + "process: [{normalize: {}}]\n"),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "negative `shuffle.buffer`",
        INVALID,
        "process[0].shuffle.buffer",
        lambda c: _submit(c, GOOD + "process: [{shuffle: {buffer: -5}}]\n"),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "plugin op with no plugin installed",
        INVALID,
        "process[0]: 'clip' is not supported",
        lambda c: _submit(c, GOOD + "process: [{plugin: {name: clip, params: {lo: 0}}}]\n"),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "`train.params` for a built-in model family",
        INVALID,
        "train.params: only for plugin model families, not 'mlp'",
        lambda c: _submit(c, GOOD.replace("model: mlp", "model: mlp, params: {width: 3}")),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "deploy gate on `loss`",
        INVALID,
        "evaluate.metric: 'loss'",
        lambda c: _submit(c, GOOD + "evaluate: {metric: loss, deploy_if_at_least: 0.5}\n"),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "pipeline file over 1 MiB",
        INVALID,
        "at most 1048576",
        lambda c: _submit(c, GOOD + "#" * (1 << 20) + "\n"),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "neither pipeline text nor spec",
        INVALID,
        "pipeline: required",
        lambda c: c.pipelines.SubmitRun(gateway_pb2.SubmitRunRequest(), timeout=30),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "`collect.source` with `..`",
        PERMISSION_DENIED,
        "collect.source: '../../../../etc/os-release' has a '..' component",
        lambda c: _submit(c, GOOD.replace(IRIS_CSV, "../../../../etc/os-release")),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "`collect.source` outside the source roots",
        PERMISSION_DENIED,
        "collect.source: '/etc/passwd' is outside the source roots",
        lambda c: _submit(c, GOOD.replace(IRIS_CSV, "/etc/passwd")),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "`collect.source` that does not exist",
        NOT_FOUND,
        "not found on the services' machine",
        lambda c: _submit(c, GOOD.replace("iris.csv", "nonexistent.csv")),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "unknown `collect.dataset`",
        NOT_FOUND,
        "collect.dataset: dataset 'nosuch' is not in the store",
        lambda c: _submit(c, "name: t\ncollect: {dataset: nosuch}\ntrain: {model: mlp}\n"),
    ),
    Case(
        "gateway",
        "SubmitRun",
        "`collect.dataset` with a format option",
        INVALID,
        "collect.label: not allowed with collect.dataset",
        lambda c: _submit(c, "name: t\ncollect: {dataset: iris, label: species}\ntrain: {model: mlp}\n"),
    ),
    Case(
        "gateway",
        "GetRun",
        "unknown run id",
        NOT_FOUND,
        "run '20990101-000000-000000' not found",
        lambda c: c.pipelines.GetRun(gateway_pb2.GetRunRequest(run_id="20990101-000000-000000"), timeout=10),
    ),
    Case(
        "gateway",
        "GetRun",
        "run id that is a path",
        INVALID,
        "run_id: '../runs' is not a run id",
        lambda c: c.pipelines.GetRun(gateway_pb2.GetRunRequest(run_id="../runs"), timeout=10),
    ),
    Case(
        "gateway",
        "CancelRun",
        "unknown run id",
        NOT_FOUND,
        "not found",
        lambda c: c.pipelines.CancelRun(gateway_pb2.CancelRunRequest(run_id="20990101-000000-000001"), timeout=10),
    ),
    Case(
        "gateway",
        "ListRuns",
        "`limit` of 5000",
        INVALID,
        "limit: 5000 is not in [1, 1000]",
        lambda c: c.pipelines.ListRuns(gateway_pb2.ListRunsRequest(limit=5000), timeout=10),
    ),
    # --- collect ----------------------------------------------------------------------
    Case(
        "collect",
        "Ingest",
        "dataset name with capitals",
        INVALID,
        "dataset: 'Bad' is not a valid name",
        lambda c: _ingest(c, IRIS_CSV, "species", dataset="Bad"),
    ),
    Case(
        "collect",
        "Ingest",
        "relative source path",
        INVALID,
        "must be an absolute path",
        lambda c: _ingest(c, "data/iris.csv", "species"),
    ),
    Case(
        "collect",
        "Ingest",
        "source file that does not exist",
        NOT_FOUND,
        "nonexistent.csv' not found",
        lambda c: _ingest(c, IRIS_CSV.replace("iris.csv", "nonexistent.csv"), "species"),
    ),
    Case(
        "collect",
        "Ingest",
        "source outside the source roots",
        PERMISSION_DENIED,
        "collect.source: '/etc/passwd' is outside the source roots",
        lambda c: _ingest(c, "/etc/passwd", "species"),
    ),
    Case(
        "collect",
        "UploadDataset",
        "uploaded file path with `..`",
        INVALID,
        "file.path '../x.csv' must be a relative",
        lambda c: c.collect.UploadDataset(
            iter(
                [
                    collect_pb2.UploadDatasetRequest(dataset="up", source=pipeline_pb2.CollectSpec(label="y")),
                    collect_pb2.UploadDatasetRequest(
                        file=collect_pb2.UploadFileChunk(path="../x.csv", data=b"a,y\n1,b\n")
                    ),
                ]
            ),
            timeout=30,
        ),
    ),
    Case(
        "collect",
        "UploadDataset",
        "csv upload of two files",
        INVALID,
        "format csv takes one file, got 2",
        lambda c: c.collect.UploadDataset(
            iter(
                [
                    collect_pb2.UploadDatasetRequest(dataset="up", source=pipeline_pb2.CollectSpec(label="y")),
                    collect_pb2.UploadDatasetRequest(
                        file=collect_pb2.UploadFileChunk(path="a.csv", data=b"a,y\n1,b\n")
                    ),
                    collect_pb2.UploadDatasetRequest(
                        file=collect_pb2.UploadFileChunk(path="b.csv", data=b"a,y\n1,b\n")
                    ),
                ]
            ),
            timeout=30,
        ),
    ),
    Case(
        "collect",
        "Ingest",
        "label column absent from the CSV",
        INVALID,
        "collect.label: column 'species' is not in the header",
        lambda c: _ingest(c, _csv(c, "nolabel.csv", "a,b,kind\n1,2,x\n"), "species"),
    ),
    Case(
        "collect",
        "Ingest",
        "non-numeric value in a numeric column",
        INVALID,
        "line 3, column 'b': the value is not a number",
        lambda c: _ingest(c, _csv(c, "nan.csv", "a,b,y\n1,2,x\n3,oops,y\n"), column_kinds={"b": "numeric"}),
    ),
    Case(
        "collect",
        "Ingest",
        "unknown kind in `collect.column_kinds`",
        INVALID,
        "collect.column_kinds.b: 'words' is not one of numeric, category, text",
        lambda c: _ingest(c, _csv(c, "kinds.csv", "a,b,y\n1,2,x\n"), column_kinds={"b": "words"}),
    ),
    Case(
        "collect",
        "Ingest",
        "row with the wrong column count",
        INVALID,
        "line 3: expected 3 columns, got 2",
        lambda c: _ingest(c, _csv(c, "short.csv", "a,b,y\n1,2,x\n3,y\n")),
    ),
    Case(
        "collect",
        "Ingest",
        "CSV with a header and no rows",
        INVALID,
        "collect.source: empty.csv has no data rows",
        lambda c: _ingest(c, _csv(c, "empty.csv", "a,b,y\n")),
    ),
    Case(
        "collect",
        "Ingest",
        "VOC annotation with no objects",
        INVALID,
        "collect.source: annotations/0.xml has no <object>",
        lambda c: _ingest(c, _detection_data(c, "voc"), label="", format="voc"),
    ),
    Case(
        "collect",
        "Ingest",
        "semicolon-separated CSV read with the default delimiter",
        INVALID,
        "the header reads as one column holding ';' (collect.delimiter is ','): set collect.delimiter: ';'",
        lambda c: _ingest(c, _csv(c, "semi.csv", "alpha;beta;out\n1,5;2;x\n"), "out"),
    ),
    Case(
        "collect",
        "Ingest",
        "VOC box outside the image",
        INVALID,
        "annotations/0.xml <object> 1 <bndbox>: the box (xmin 2, ymin 2, xmax 12, ymax 6) is empty or outside the 8x8",
        lambda c: _ingest(c, _detection_data(c, "voc", [("square", 2, 2, 12, 6)]), label="", format="voc"),
    ),
    Case(
        "collect",
        "Ingest",
        "COCO annotation of an unknown category",
        INVALID,
        "instances.json annotations[0].category_id: 9 is not a category of the file",
        lambda c: _ingest(c, _detection_data(c, "coco", category_id=9), label="", format="coco"),
    ),
    Case(
        "collect",
        "Ingest",
        "`collect.decimal` equal to `collect.delimiter`",
        INVALID,
        "collect.decimal: ',' is also collect.delimiter",
        lambda c: _ingest(c, _csv(c, "dec.csv", "a,y\n1,x\n"), decimal=","),
    ),
    Case(
        "collect",
        "GetDataset",
        "unknown dataset",
        NOT_FOUND,
        "dataset 'nosuch' not found",
        lambda c: c.collect.GetDataset(
            collect_pb2.GetDatasetRequest(dataset=data_pb2.DatasetRef(name="nosuch")), timeout=10
        ),
    ),
    Case(
        "collect",
        "ReadDataset",
        "unknown dataset version",
        NOT_FOUND,
        "dataset 'iris' version 'abcdef' not found",
        lambda c: list(
            c.collect.ReadDataset(
                collect_pb2.ReadDatasetRequest(dataset=data_pb2.DatasetRef(name="iris", version="abcdef")), timeout=10
            )
        ),
    ),
    Case(
        "collect",
        "ReadDataset",
        "`batch_size` of 2^21",
        INVALID,
        "batch_size: 2097152 is not in",
        lambda c: list(
            c.collect.ReadDataset(collect_pb2.ReadDatasetRequest(dataset=IRIS, batch_size=1 << 21), timeout=10)
        ),
    ),
    Case(
        "collect",
        "ReadDataset",
        "split leaving no training rows",
        INVALID,
        "validation + test must leave",
        lambda c: list(
            c.collect.ReadDataset(
                collect_pb2.ReadDatasetRequest(
                    dataset=IRIS, split=data_pb2.SplitSpec(validation=0.5, test=0.5), subset=data_pb2.SUBSET_TRAIN
                ),
                timeout=10,
            )
        ),
    ),
    Case(
        "collect",
        "ReadDataset",
        "a shard whose stored bytes changed (one byte flipped)",
        DATA_LOSS,
        ".npz is corrupt: its sha256 is",
        _rotten_shard,
    ),
    # --- process ----------------------------------------------------------------------
    Case(
        "process",
        "Process",
        "standardize that was never fitted",
        FAILED_PRECONDITION,
        "process[0].standardize is not fitted",
        lambda c: list(
            c.process.Process(
                process_pb2.ProcessRequest(
                    dataset=IRIS, ops=[pipeline_pb2.Op(standardize=pipeline_pb2.StandardizeOp())]
                ),
                timeout=30,
            )
        ),
    ),
    Case(
        "process",
        "Fit",
        "op scoped to a column that is not numeric",
        INVALID,
        "process[0].standardize.columns: 'species' is not a numeric column of the dataset",
        lambda c: c.process.Fit(
            process_pb2.FitRequest(
                dataset=IRIS, ops=[pipeline_pb2.Op(standardize=pipeline_pb2.StandardizeOp(columns=["species"]))]
            ),
            timeout=30,
        ),
    ),
    Case(
        "process",
        "Fit",
        "unknown dataset",
        NOT_FOUND,
        "dataset 'nosuch' not found",
        lambda c: c.process.Fit(
            process_pb2.FitRequest(
                dataset=data_pb2.DatasetRef(name="nosuch"),
                ops=[pipeline_pb2.Op(standardize=pipeline_pb2.StandardizeOp())],
            ),
            timeout=30,
        ),
    ),
    # --- train ------------------------------------------------------------------------
    Case(
        "train",
        "Train",
        "unknown model",
        INVALID,
        "train.model: 'forest' is not supported",
        lambda c: list(
            c.train.Train(
                train_pb2.TrainRequest(
                    dataset=IRIS,
                    pipeline=pipeline_pb2.PipelineSpec(name="t", train=pipeline_pb2.TrainSpec(model="forest")),
                ),
                timeout=30,
            )
        ),
    ),
    Case(
        "train",
        "Train",
        "image model (`cnn`) on tabular data",
        INVALID,
        "train.model: 'cnn' is an image model",
        lambda c: list(
            c.train.Train(
                train_pb2.TrainRequest(
                    dataset=IRIS,
                    pipeline=pipeline_pb2.PipelineSpec(name="t", train=pipeline_pb2.TrainSpec(model="cnn")),
                ),
                timeout=30,
            )
        ),
    ),
    Case(
        "train",
        "Train",
        "unknown dataset",
        NOT_FOUND,
        "dataset 'nosuch' not found",
        lambda c: list(
            c.train.Train(
                train_pb2.TrainRequest(
                    dataset=data_pb2.DatasetRef(name="nosuch"),
                    pipeline=pipeline_pb2.PipelineSpec(name="t", train=pipeline_pb2.TrainSpec(model="mlp")),
                ),
                timeout=30,
            )
        ),
    ),
    Case(
        "train",
        "Train",
        "resuming from a checkpoint whose stored bytes changed",
        DATA_LOSS,
        "object runs/20990101-000000-000009/checkpoints/epoch-00001.keras is corrupt",
        _rotten_checkpoint,
    ),
    Case(
        "train",
        "TrainWorker",
        "worker index 0 (the chief's own)",
        INVALID,
        "index: 0 is not in [1, 2)",
        lambda c: list(
            c.train.TrainWorker(train_pb2.TrainWorkerRequest(workers=["127.0.0.1:1", "127.0.0.1:2"]), timeout=30)
        ),
    ),
    Case(
        "train",
        "TrainWorker",
        "resuming a distributed worker from a checkpoint whose stored bytes changed",
        DATA_LOSS,
        "object runs/20990101-000000-000010/checkpoints/epoch-00001.keras is corrupt",
        _rotten_worker_checkpoint,
    ),
    Case(
        "train",
        "Train",
        "`train.base` whose input does not fit the data (takes 8 features, iris has 4)",
        INVALID,
        "wide.keras' takes input of shape [8] per row, but the data gives 'features' float32 [4]",
        _wide_base,
    ),
    Case(
        "train",
        "Train",
        "`train.freeze` counting more layers than the base has",
        INVALID,
        "train.freeze: 50 is more than the",
        lambda c: _train(c, model="mlp", base="iris:1", freeze="50"),
    ),
    Case(
        "train",
        "Train",
        "`train.fine_tune.unfreeze` counting more layers than the base has",
        INVALID,
        "train.fine_tune.unfreeze: 40 is more than the",
        lambda c: _train(c, model="mlp", base="iris:1", fine_tune=pipeline_pb2.FineTune(epochs=1, unfreeze="40")),
    ),
    Case(
        "train",
        "Train",
        "`train.base` of a detector without convolutions (an mlp)",
        INVALID,
        "flat.keras' has no convolutional layers a detector can sit on",
        _flat_detector_base,
    ),
    Case(
        "train",
        "Train",
        "`train.weights: imagenet` without Keras' weights file in KERAS_HOME/models",
        FAILED_PRECONDITION,
        "train.weights: imagenet needs Keras' weights file "
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5",
        _imagenet_absent,
    ),
    Case(
        "train",
        "Train",
        "`train.base` naming a model version stored without its Keras network",
        FAILED_PRECONDITION,
        "train.base: model 'pics' version 1 has no stored Keras network",
        lambda c: _train(c, model="mlp", base="pics:1"),
    ),
    # --- serve ------------------------------------------------------------------------
    Case(
        "serve",
        "Predict",
        "unknown model",
        NOT_FOUND,
        "model 'nomodel'",
        lambda c: c.serve.Predict(_predict(np.zeros((1, 4), np.float32), name="nomodel"), timeout=30),
    ),
    Case(
        "serve",
        "Predict",
        "3 features for a 4-feature model",
        INVALID,
        "inputs['features']",
        lambda c: c.serve.Predict(_predict(np.zeros((2, 3), np.float32)), timeout=30),
    ),
    Case(
        "serve",
        "Predict",
        "float64 instead of float32",
        INVALID,
        "float64",
        lambda c: c.serve.Predict(_predict(np.zeros((2, 4), np.float64)), timeout=30),
    ),
    Case(
        "serve",
        "Predict",
        "unknown input name `pixels`",
        INVALID,
        "inputs['pixels']",
        lambda c: c.serve.Predict(_predict(np.zeros((2, 4), np.float32), input_name="pixels"), timeout=30),
    ),
    Case(
        "serve",
        "Predict",
        "model name that is a path",
        INVALID,
        "'../iris' is not a valid name",
        lambda c: c.serve.Predict(_predict(np.zeros((1, 4), np.float32), name="../iris"), timeout=30),
    ),
    Case(
        "serve",
        "Predict",
        "NaN in a numeric input (model without fill_missing)",
        INVALID,
        "inputs['features'] row 1, column 'petal_length': NaN is not accepted",
        lambda c: c.serve.Predict(_predict(np.array([[5, 3, 1, 0.2], [5, 3, np.nan, 0.2]], np.float32)), timeout=30),
    ),
    Case(
        "serve",
        "Predict",
        "infinity in a numeric input",
        INVALID,
        "inputs['features'] row 0, column 'sepal_length': infinity is not accepted",
        lambda c: c.serve.Predict(_predict(np.array([[np.inf, 3, 1, 0.2]], np.float32)), timeout=30),
    ),
    Case(
        "serve",
        "Predict",
        "a string where a number is expected",
        INVALID,
        "inputs['features'] row 0, column 'sepal_width': 'wide' is not a number",
        lambda c: c.serve.Predict(_raw("iris", features=[["5.1", "wide", "1.4", "0.2"]]), timeout=30),
    ),
    Case(
        "serve",
        "Predict",
        "a raw input left out (`text`)",
        INVALID,
        "inputs['text']: required (string [rows], kind text)",
        lambda c: c.serve.Predict(
            _raw("raw", features=[[1, 2, 3]], categorical=[["red", "small"]], image=[_png()]), timeout=30
        ),
    ),
    Case(
        "serve",
        "Predict",
        "bytes that are no image",
        INVALID,
        "inputs['image'] row 1: not an image the model can decode",
        lambda c: c.serve.Predict(_raw("pics", image=[_png(), b"GIF? no"]), timeout=30),
    ),
    Case(
        "serve",
        "Predict",
        "PNG whose data is broken past its header",
        INVALID,
        "inputs['image'] row 0: the model could not use this value",
        lambda c: c.serve.Predict(_raw("pics", image=[_png(broken_body=True)]), timeout=30),
    ),
    Case(
        "serve",
        "Predict",
        "image over COOKLINE_SERVE_MAX_IMAGE_BYTES (8 MiB)",
        INVALID,
        "inputs['image'] row 0: image of 8388609 bytes is over the limit of 8388608",
        lambda c: c.serve.Predict(_raw("pics", image=[b"\x89PNG" + bytes((8 << 20) - 3)]), timeout=30),
    ),
    Case(
        "serve",
        "Predict",
        "numbers for an image input",
        INVALID,
        "inputs['image']: dtype float32, expected string",
        lambda c: c.serve.Predict(_raw("pics", image=[[0.5]]), timeout=30),
    ),
    Case(
        "serve",
        "LoadModel",
        "`batching.allowed_batch_sizes` not ascending",
        INVALID,
        "batching.allowed_batch_sizes[1]: 8 after 32; the sizes must be strictly ascending",
        lambda c: c.serve.LoadModel(
            serve_pb2.LoadModelRequest(
                model=model_pb2.ModelRef(name="iris"), batching=serve_pb2.BatchingConfig(allowed_batch_sizes=[32, 8])
            ),
            timeout=60,
        ),
    ),
    Case(
        "serve",
        "LoadModel",
        "a model file whose stored bytes changed (one byte flipped)",
        DATA_LOSS,
        "variables/variables.data-00000-of-00001 is corrupt",
        _rotten_model,
    ),
    # --- registry (gateway) -----------------------------------------------------------
    Case(
        "gateway",
        "GetModel",
        "unknown model",
        NOT_FOUND,
        "model 'nomodel' not found",
        lambda c: c.registry.GetModel(registry_pb2.GetModelRequest(name="nomodel"), timeout=10),
    ),
    Case(
        "gateway",
        "DeleteModelVersion",
        "the deployed version",
        FAILED_PRECONDITION,
        "is deployed",
        lambda c: c.registry.DeleteModelVersion(
            registry_pb2.DeleteModelVersionRequest(name="iris", version=1), timeout=10
        ),
    ),
    Case(
        "gateway",
        "DeployModel",
        "a version that is not published (checked before any serve replica is called)",
        NOT_FOUND,
        "model 'iris' version 99 not found",
        lambda c: c.registry.DeployModel(
            registry_pb2.DeployModelRequest(model=model_pb2.ModelRef(name="iris", version=99)), timeout=10
        ),
    ),
    Case(
        "gateway",
        "DeployModel",
        "both `model.version` and `alias`",
        INVALID,
        "model.version: 1 given together with alias 'production'",
        lambda c: c.registry.DeployModel(
            registry_pb2.DeployModelRequest(model=model_pb2.ModelRef(name="iris", version=1), alias="production"),
            timeout=10,
        ),
    ),
    Case(
        "gateway",
        "UndeployModel",
        "unknown model",
        NOT_FOUND,
        "model 'nomodel' not found",
        lambda c: c.registry.UndeployModel(registry_pb2.UndeployModelRequest(name="nomodel"), timeout=30),
    ),
    Case(
        "gateway",
        "SweepAbandonedVersions",
        "a negative `older_than_seconds`",
        INVALID,
        "older_than_seconds: -1 is negative",
        lambda c: c.registry.SweepAbandonedVersions(
            registry_pb2.SweepAbandonedVersionsRequest(older_than_seconds=-1), timeout=10
        ),
    ),
    # --- partitioned streams (one training worker's share) --------------------------------
    Case(
        "collect",
        "ReadDataset",
        "`partition.index` not below `partition.count`",
        INVALID,
        "partition.index: 2 is not in [0, 2)",
        lambda c: list(
            c.collect.ReadDataset(
                collect_pb2.ReadDatasetRequest(dataset=IRIS, partition=data_pb2.Partition(index=2, count=2)), timeout=10
            )
        ),
    ),
    Case(
        "process",
        "Process",
        "more partitions than rows (a part would be empty)",
        INVALID,
        "partition.count: 1000 parts of",
        lambda c: list(
            c.process.Process(
                process_pb2.ProcessRequest(dataset=IRIS, partition=data_pb2.Partition(index=0, count=1000)), timeout=30
            )
        ),
    ),
]


@dataclass(frozen=True)
class HttpCase:
    service: str  # whose HTTP port answers (COOKLINE_<SERVICE>_HTTP_ADDR)
    method: str
    path: str
    bad_input: str  # what is wrong, in words
    status: int  # the HTTP status
    message: str  # a part of the JSON error's message (names the field)
    body: bytes = b""
    headers: tuple = (("content-type", "application/json"),)
    # Content-Length sent with a shorter body or none (the oversized case: the server must
    # answer from the header; a stalled body: answered once it stops); None: the body's length.
    declared_length: int | None = None


def _infer_body(data=None, **tensor) -> bytes:
    features = {
        "name": "features",
        "datatype": "FP32",
        "shape": [1, 4],
        "data": [5.1, 3.5, 1.4, 0.2] if data is None else data,
    } | tensor
    return json.dumps({"inputs": [features]}).encode()


IRIS_INFER = "/v2/models/iris/infer"
IRIS_PREDICT = "/api/models/iris/predict"


def _row_body(**changes) -> bytes:
    """The gateway's predict body: one iris row, with columns changed (None drops one)."""
    row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2} | changes
    return json.dumps({"row": {k: v for k, v in row.items() if v is not None}}).encode()


HTTP_CASES = [
    HttpCase("serve", "POST", IRIS_INFER, "malformed JSON", 400, "body: malformed JSON", b'{"inputs": [}'),
    HttpCase(
        "serve",
        "POST",
        IRIS_INFER,
        "JSON that is a list, not an object",
        400,
        "body: list, expected a JSON object",
        b"[1, 2]",
    ),
    HttpCase("serve", "POST", IRIS_INFER, "no `inputs`", 400, "body.inputs: required", b'{"id": "x"}'),
    HttpCase(
        "serve",
        "POST",
        IRIS_INFER,
        "content type `text/plain`",
        415,
        "content-type: 'text/plain'",
        _infer_body(),
        (("content-type", "text/plain"),),
    ),
    HttpCase(
        "serve",
        "POST",
        IRIS_INFER,
        "body over COOKLINE_MAX_MESSAGE_MB",
        413,
        "body: 67108865 bytes is over the limit",
        declared_length=(64 << 20) + 1,
    ),
    HttpCase(
        "serve",
        "POST",
        IRIS_INFER,
        "body that stops arriving (100 bytes announced, 9 sent)",
        408,
        "body: not received within 30 s",
        b'{"inputs"',
        declared_length=100,
    ),
    HttpCase("serve", "POST", "/v2/models/nomodel/infer", "unknown model", 404, "model 'nomodel'", _infer_body()),
    HttpCase(
        "serve",
        "POST",
        "/v2/models/iris/versions/999/infer",
        "unknown model version",
        404,
        "version 999",
        _infer_body(),
    ),
    HttpCase(
        "serve",
        "POST",
        "/v2/models/iris/versions/one/infer",
        "version that is not a number",
        400,
        "model_version: 'one' is not an integer version",
        _infer_body(),
    ),
    HttpCase("serve", "GET", "/v2/models/nomodel", "metadata of an unknown model", 404, "model 'nomodel'"),
    HttpCase(
        "serve",
        "POST",
        IRIS_INFER,
        "`shape` that is not a list of integers",
        400,
        "inputs[0].shape: ['1', 4], expected a list of integers",
        _infer_body(shape=["1", 4]),
    ),
    HttpCase(
        "serve",
        "POST",
        IRIS_INFER,
        "unknown `datatype` `FLOAT`",
        400,
        "inputs[0].datatype: 'FLOAT' is not one of",
        _infer_body(datatype="FLOAT"),
    ),
    HttpCase(
        "serve",
        "POST",
        IRIS_INFER,
        "a string among FP32 `data`",
        400,
        'inputs[0].data[1]: "x" is not a FP32 value',
        _infer_body(data=[5.1, "x", 1.4, 0.2]),
    ),
    HttpCase(
        "serve",
        "POST",
        IRIS_INFER,
        "3 features for a 4-feature model",
        400,
        "inputs['features']",
        _infer_body(data=[5.1, 3.5, 1.4], shape=[1, 3]),
    ),
    HttpCase(
        "serve",
        "POST",
        IRIS_INFER,
        "`Inference-Header-Content-Length` past the body",
        400,
        "Inference-Header-Content-Length: '9999'",
        _infer_body(),
        (("content-type", "application/octet-stream"), ("inference-header-content-length", "9999")),
    ),
    HttpCase("serve", "GET", IRIS_INFER, "GET on the infer path", 405, "GET /v2/models/iris/infer: Method Not Allowed"),
    HttpCase("serve", "GET", "/v2/nothing", "unknown path", 404, "GET /v2/nothing: Not Found"),
    # --- gateway: the dashboard's JSON API (docs/http-gateway.md) ---------------------
    HttpCase("gateway", "POST", IRIS_PREDICT, "malformed JSON", 400, "body: malformed JSON", b'{"row": {'),
    HttpCase(
        "gateway",
        "POST",
        IRIS_PREDICT,
        "content type `text/plain`",
        415,
        "content-type: 'text/plain'",
        _row_body(),
        (("content-type", "text/plain"),),
    ),
    HttpCase(
        "gateway",
        "POST",
        IRIS_PREDICT,
        "body over COOKLINE_MAX_MESSAGE_MB",
        413,
        "body: 67108865 bytes is over the limit",
        declared_length=(64 << 20) + 1,
    ),
    HttpCase(
        "gateway",
        "POST",
        IRIS_PREDICT,
        "multipart body without its boundary",
        400,
        "boundary",
        b"--x\r\n",
        (("content-type", "multipart/form-data"),),
    ),
    HttpCase("gateway", "POST", "/api/models/nomodel/predict", "unknown model", 404, "model 'nomodel'", _row_body()),
    HttpCase(
        "gateway",
        "POST",
        "/api/models/iris/versions/999/predict",
        "unknown model version",
        404,
        "version 999",
        _row_body(),
    ),
    HttpCase(
        "gateway",
        "POST",
        "/api/models/iris/versions/one/predict",
        "version that is not a number",
        400,
        "version: 'one' is not an integer",
        _row_body(),
    ),
    HttpCase("gateway", "POST", IRIS_PREDICT, "no `row`", 400, "body.row: required", b'{"rows": []}'),
    HttpCase(
        "gateway",
        "POST",
        IRIS_PREDICT,
        "a column missing from the row",
        400,
        "row: column 'petal_width' is missing",
        _row_body(petal_width=None),
    ),
    HttpCase(
        "gateway",
        "POST",
        IRIS_PREDICT,
        "a word in a numeric column",
        400,
        "row['sepal_length']: 'abc' is not a number",
        _row_body(sepal_length="abc"),
    ),
    HttpCase(
        "gateway",
        "POST",
        IRIS_PREDICT,
        "a column the model does not take",
        400,
        "row: unknown column 'colour'",
        _row_body(colour="blue"),
    ),
    HttpCase("gateway", "POST", "/api/runs", "empty pipeline", 400, "pipeline: required", b'{"pipeline": ""}'),
    HttpCase(
        "gateway",
        "POST",
        "/api/runs",
        "pipeline file that is a YAML list",
        400,
        "pipeline: expected a mapping",
        b'{"pipeline": "- a"}',
    ),
    HttpCase(
        "gateway",
        "POST",
        "/api/runs",
        "data upload without the file",
        400,
        "file: required",
        b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\niris\r\n--b--\r\n',
        (("content-type", "multipart/form-data; boundary=b"),),
    ),
    HttpCase("gateway", "GET", "/api/runs?limit=5000", "`limit` of 5000", 400, "limit: 5000 is not in [1, 1000]"),
    HttpCase(
        "gateway",
        "GET",
        "/api/runs/20990101-000000-000000",
        "unknown run id",
        404,
        "run '20990101-000000-000000' not found",
    ),
    HttpCase(
        "gateway",
        "GET",
        "/api/runs/20990101-000000-000000/events",
        "events of an unknown run",
        404,
        "run '20990101-000000-000000' not found",
    ),
    HttpCase(
        "gateway",
        "PUT",
        "/api/models/iris/aliases/prod",
        "alias to version 0",
        400,
        "version: 0 is not an integer from 1",
        b'{"version": 0}',
    ),
    HttpCase(
        "gateway",
        "POST",
        "/api/models/iris/deploy",
        "deploy of an unknown version",
        404,
        "version 999",
        b'{"version": 999}',
    ),
    HttpCase("gateway", "GET", "/api/nothing", "unknown path", 404, "Not Found"),
]


@dataclass(frozen=True)
class FaultCase:
    """A resource running out, rather than a bad input: tested by `test` in its own set-up (a full disk, a
    revoked permission), which checks the status and that the message contains `message`."""

    service: str
    rpc: str
    condition: str
    code: grpc.StatusCode
    message: str
    test: str


RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
FAULT_CASES = [
    FaultCase(
        "collect",
        "Ingest (a run's collect stage: the run ends FAILED with this reason)",
        "the local store's disk fills up mid-ingest (ENOSPC); the shards written are removed",
        RESOURCE_EXHAUSTED,
        "object store full: put datasets/",
        "tests/e2e/test_resource_exhaustion.py::test_full_disk_fails_the_run_and_the_stack_serves_on",
    ),
    FaultCase(
        "collect",
        "Ingest (a run's collect stage: the run ends FAILED with this reason)",
        "the S3 access key loses its Write permission mid-run; the shards written stay invisible (no manifest)",
        PERMISSION_DENIED,
        "object store denied the call: put datasets/",
        "tests/e2e/test_resource_exhaustion.py::test_s3_write_revoked_mid_run_fails_the_run_and_the_stack_serves_on",
    ),
    FaultCase(
        "collect, serve (every service)",
        "UploadDataset, PredictStream (any call)",
        "a stream of messages over COOKLINE_MAX_MESSAGE_MB; the server's memory stays within the bound in "
        "configuration.md",
        RESOURCE_EXHAUSTED,
        "larger than max",
        "tests/integration/test_lifecycle.py::test_streams_of_oversized_messages_are_refused_within_the_memory_bound",
    ),
]


def render() -> str:
    """docs/errors.md: one row per case."""
    lines = [
        "# Bad-input catalogue",
        "",
        "Every row is a test: `tests/e2e/test_errors.py` sends the input to the live stack and",
        "checks the status code and that the message contains the text shown. Generated from",
        "`tests/support/error_catalogue.py` (`.venv/bin/python tests/support/error_catalogue.py > docs/errors.md`).",
        "",
        "| # | service | RPC | bad input | status | message contains |",
        "|---|---|---|---|---|---|",
    ]
    for i, case in enumerate(CASES, start=1):
        message = case.message.replace("|", "\\|")
        lines.append(f"| {i} | {case.service} | {case.rpc} | {case.bad_input} | {case.code.name} | `{message}` |")
    lines += [
        "",
        "## HTTP",
        "",
        "The same over the services' HTTP ports (serve's OIP v2 REST, docs/http.md; the gateway's JSON API,",
        "docs/http-gateway.md): a 4xx status and a",
        'JSON body `{"error": "..."}` whose message contains the text shown, never a 500 and never',
        "a connection left hanging.",
        "",
        "| # | service | request | bad input | status | message contains |",
        "|---|---|---|---|---|---|",
    ]
    for i, case in enumerate(HTTP_CASES, start=1):
        message = case.message.replace("|", "\\|")
        lines.append(
            f"| {i} | {case.service} | {case.method} `{case.path}` | {case.bad_input} | {case.status} | `{message}` |"
        )
    lines += [
        "",
        "## Resources running out",
        "",
        "Not a bad input but a limit reached: each row is checked by the test it names, in a set-up of its",
        "own. The services stay up and the next run succeeds.",
        "",
        "| # | service | RPC | condition | status | message contains | test |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, case in enumerate(FAULT_CASES, start=1):
        message = case.message.replace("|", "\\|")
        lines.append(
            f"| {i} | {case.service} | {case.rpc} | {case.condition} | {case.code.name} | `{message}` | `{case.test}` |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
