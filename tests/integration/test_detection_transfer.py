"""A detector started from train.base, through real collect, process, train and serve processes on
S3 (SeaweedFS), on small generated VOC scenes (examples/tools/make_shapes_voc.py, 32x32): a cnn
classifier's convolutions become a detector's backbone (frozen, then partly unfrozen by
train.fine_tune), and that detector is the base of one for two new classes (a new heatmap head).
Lineage records each base; the detector serves boxes. Bases that cannot be a detector's are
INVALID_ARGUMENT naming the field: an image size the base does not take, a base without
convolutions (an mlp, as a .keras file) and a frozen-layer count larger than the backbone."""

import os
import sys

import grpc
import keras
import numpy as np
import pytest

from cookline import channels
from cookline.v1 import data_pb2, model_pb2, pipeline_pb2, serve_pb2, train_pb2, train_pb2_grpc
from dataplane import ingest
from helpers import EXAMPLES, stack_env, unique_bucket
from services.common import layout
from services.common.store import store_from_env
from services.train import transfer

sys.path.insert(0, os.path.join(EXAMPLES, "tools"))
import make_shapes_voc  # noqa: E402 - the example's own generator

SIZE = 32
SPLIT = data_pb2.SplitSpec(test=0.2, seed=1)
# The classes of the second data set: the same scenes' shapes, named anew and two of them merged.
NEW_NAMES = {"circle": "round", "square": "corner", "triangle": "corner"}


@pytest.fixture(scope="module")
def services(s3_server, tmp_path_factory):
    """collect, process, train and serve as real processes on S3, with three VOC data sets ingested:
    "scenes" (circle, square, triangle), "renamed" (round, corner) and "wide" (40x40 scenes)."""
    from cookline.stack import Stack

    env = stack_env(os.environ, s3_server.env(unique_bucket("detbase")), s3_server.ports.values())
    root = tmp_path_factory.mktemp("voc")
    scenes = make_shapes_voc.write(str(root / "scenes"), scenes=40, size=SIZE, seed=5)
    renamed = make_shapes_voc.write(str(root / "renamed"), scenes=24, size=SIZE, seed=9)
    for file_name in os.listdir(os.path.join(renamed, "annotations")):
        path = os.path.join(renamed, "annotations", file_name)
        with open(path) as f:
            text = f.read()
        for old, new in NEW_NAMES.items():
            text = text.replace(f"<name>{old}</name>", f"<name>{new}</name>")
        with open(path, "w") as f:
            f.write(text)
    wide = make_shapes_voc.write(str(root / "wide"), scenes=6, size=40, seed=3)
    with Stack(env, log_dir=str(tmp_path_factory.mktemp("logs"))) as running:
        for service in ("collect", "process", "train", "serve"):
            running.start(service)
        running.wait_healthy(timeout=180)
        for name, source in (("scenes", scenes), ("renamed", renamed), ("wide", wide)):
            ingest(env, name, source, format="voc")
        yield env, store_from_env(env), scenes


def _train(env, name: str, dataset: str, **train) -> train_pb2.TrainResult:
    """A Train call (the gateway's stage) on `dataset`; its result."""
    stub = train_pb2_grpc.TrainServiceStub(channels.channel("train", env))
    pipeline = pipeline_pb2.PipelineSpec(name=name, split=SPLIT, train=pipeline_pb2.TrainSpec(**train))
    request = train_pb2.TrainRequest(dataset=data_pb2.DatasetRef(name=dataset), pipeline=pipeline)
    responses = list(stub.Train(request, timeout=600))
    assert responses[-1].HasField("result")
    return responses[-1]


def _network(store, name: str, tmp_path) -> keras.Model:
    """The Keras network a published model version stores (what a later train.base starts from)."""
    path = str(tmp_path / f"{name}.keras")
    with open(path, "wb") as f:
        f.write(store.get_bytes(layout.model_prefix(name, 1) + transfer.NETWORK))
    return keras.models.load_model(path, compile=False)


def _convolutions(model: keras.Model) -> list[list[np.ndarray]]:
    return [layer.get_weights() for layer in transfer.leaves(model) if isinstance(layer, keras.layers.Conv2D)]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def classifier(services):
    """A cnn classifier (rescaling, two convolutions with their pooling, flatten, dense, dense) on the
    scenes' first objects."""
    env = services[0]
    _train(env, "cls", "scenes", model="cnn", epochs=2, batch_size=16, seed=1)
    return "cls:1"


def test_a_detector_starts_from_a_classifier_then_from_that_detector(services, classifier, tmp_path):
    env, store, scenes = services
    # freeze: base, then fine_tune unfreezes the backbone's last 3 layers (pooling, convolution, pooling)
    result = _train(
        env,
        "det",
        "scenes",
        model="detector",
        base=classifier,
        epochs=1,
        batch_size=16,
        fine_tune=pipeline_pb2.FineTune(epochs=1, unfreeze="3"),
        score_threshold=0.05,
        max_detections=5,
    ).result
    assert "map50" in result.metrics
    base, det = _network(store, "cls", tmp_path), _network(store, "det", tmp_path)
    (first, second), (detector_first, detector_second) = _convolutions(base), _convolutions(det.get_layer("backbone"))
    assert _same(detector_first, first)  # frozen through both phases: the base's weights, not fresh ones
    assert not _same(detector_second, second)  # unfrozen in the second phase: it trained
    assert not any(isinstance(layer, keras.layers.Dense) for layer in transfer.leaves(det))  # the head is gone
    lineage = layout.read_model_record(store, "det", 1).base
    assert (lineage.model, lineage.version) == ("cls", 1)

    # A detector for new classes from that detector: its backbone (frozen: the default) and box
    # heads, and a new heatmap of one channel per class.
    _train(env, "det2", "renamed", model="detector", base="det:1", epochs=1, batch_size=16, score_threshold=0.05)
    det2 = _network(store, "det2", tmp_path)
    assert _same(det2.get_layer("backbone").get_weights(), det.get_layer("backbone").get_weights())
    assert det2.get_layer("heatmap").get_weights()[0].shape[-1] == 2 and det.get_layer("heatmap").output.shape[-1] == 3
    record = layout.read_model_record(store, "det2", 1)
    assert (record.base.model, record.base.version) == ("det", 1)
    assert list(record.class_names) == ["corner", "round"] and record.task == "detection"
    # the registry's guard against deleting a base (gateway DeleteModelVersion, force unset) sees both
    from gateway.registry import RegistryServicer

    registry = RegistryServicer(store)
    assert registry._based_on("cls", 1) == ["det:1"] and registry._based_on("det", 1) == ["det2:1"]

    # Served: PNG bytes in, boxes with the new class names out.
    from cookline.client import Client

    images = []
    for i in range(3):
        with open(os.path.join(scenes, "images", f"{i:04d}.png"), "rb") as f:
            images.append(f.read())
    with Client(env=env) as client:
        client.serve.LoadModel(serve_pb2.LoadModelRequest(model=model_pb2.ModelRef(name="det2")), timeout=180)
        rows = client.predict("det2", {"image": images})
    assert len(rows) == 3
    found = [d for row in rows for d in row["detections"]]
    assert found and {d["label"] for d in found} <= {"corner", "round"}
    assert all(len(d["box"]) == 4 and all(0 <= v <= 1 for v in d["box"]) for d in found)


def _error(env, name: str, dataset: str, **train) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _train(env, name, dataset, model="detector", epochs=1, **train)
    return info.value


def test_bases_a_detector_cannot_start_from_are_invalid(services, classifier, tmp_path):
    env = services[0]
    error = _error(env, "bad", "wide", base=classifier)  # 40x40 scenes, a base taking 32x32
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "train.base: 'cls:1' takes input of shape [32, 32, 3] per row" in error.details()
    assert "'image' uint8 [40, 40, 3]" in error.details()

    # an mlp (no convolutions), given as a .keras file
    from cookline.spec import train as train_spec
    from services.train import models

    path = str(tmp_path / "flat.keras")
    models.build(train_spec.resolve(pipeline_pb2.TrainSpec(model="mlp")), [SIZE, SIZE, 3], 3, "uint8").save(path)
    error = _error(env, "bad", "scenes", base=path)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"train.base: {path!r} has no convolutional layers a detector can sit on")

    # the backbone taken from the classifier has 5 layers (rescaling, convolution, pooling, convolution, pooling)
    error = _error(env, "bad", "scenes", base=classifier, freeze="6")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("train.freeze: 6 is more than the 5 layers of the base (cls:1)")
