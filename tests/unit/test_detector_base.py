"""A detector started from a base in process (services/train/detection.build_on): a classifier's
convolutions become its backbone (its flattening and dense layers dropped), a detector gives its
backbone and its head layers (the heatmap's output is new for the new classes); train.freeze and
train.fine_tune.unfreeze count the backbone's layers; a base without convolutions is refused."""

import grpc
import keras
import numpy as np
import pytest

from cookline.spec import train as train_spec
from cookline.v1 import pipeline_pb2
from services.common.errors import Fail
from services.train import detection, models, transfer

SHAPE = [16, 16, 3]


def _spec(**fields) -> pipeline_pb2.TrainSpec:
    return train_spec.resolve(pipeline_pb2.TrainSpec(**fields))


def _saved(model: keras.Model, folder) -> keras.Model:
    """The network as train.base loads it: saved as a model version stores it, loaded back."""
    path = str(folder / transfer.NETWORK)
    model.save(path)
    return keras.models.load_model(path, compile=False)


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True))


def _fit_once(model: keras.Model, classes: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, *SHAPE)).astype("uint8")
    targets = np.zeros((4, *detection.grid(*SHAPE[:2]), classes + 5), "float32")
    model.fit(images, targets, epochs=1, batch_size=4, verbose=0)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> keras.Model:
    """A cnn classifier (3 classes) on 16x16 colour images: rescaling, conv, pool, conv, pool, flatten, dense, dense."""
    keras.utils.set_random_seed(1)
    return _saved(models.build(_spec(model="cnn"), SHAPE, 3, "uint8"), tmp_path_factory.mktemp("cnn"))


def test_a_classifiers_convolutions_become_the_backbone_and_its_dense_layers_go(cnn):
    spec = _spec(model="detector", base="shapes:1")
    assert spec.freeze == "base" and spec.backbone == "" and not spec.conv_filters  # the base's architecture
    model = detection.build_on(cnn, spec, SHAPE, 2)
    backbone = transfer.based_part(model)
    assert backbone.name == "backbone"
    assert [type(layer).__name__ for layer in transfer.leaves(backbone)] == [
        "Rescaling",
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
    ]
    convolutions = [layer for layer in cnn.layers if isinstance(layer, keras.layers.Conv2D)]
    assert _same(backbone.get_weights(), [w for layer in convolutions for w in layer.get_weights()])
    assert tuple(model.output.shape[1:]) == (*detection.grid(16, 16), 2 + 4)
    # freeze: base (the default): the backbone stays as it was, the heads train
    assert not any(layer.trainable for layer in transfer.leaves(backbone))
    before = backbone.get_weights()
    _fit_once(model, 2)
    assert _same(backbone.get_weights(), before)


def test_freeze_and_fine_tune_count_the_backbones_layers(cnn):
    spec = _spec(model="detector", base="shapes:1", freeze="2", fine_tune=pipeline_pb2.FineTune(epochs=1, unfreeze="1"))
    model = detection.build_on(cnn, spec, SHAPE, 2)
    backbone = transfer.based_part(model)
    assert [layer.trainable for layer in transfer.leaves(backbone)] == [False, False, True, True, True]
    first = backbone.get_weights()[:2]  # the first convolution: frozen
    _fit_once(model, 2)
    assert _same(backbone.get_weights()[:2], first)
    transfer.unfreeze(model, spec)  # the second phase: the last layer besides those that trained
    detection.compile_model(model, spec, 2, spec.fine_tune.learning_rate)
    assert [layer.trainable for layer in transfer.leaves(backbone)] == [False, False, True, True, True]
    _fit_once(model, 2)

    for fields, message in (
        ({"freeze": "6"}, "train.freeze: 6 is more than the 5 layers of the base (shapes:1)"),
        ({"fine_tune": pipeline_pb2.FineTune(epochs=1, unfreeze="9")}, "train.fine_tune.unfreeze: 9 is more than"),
    ):
        with pytest.raises(Fail) as info:
            detection.build_on(cnn, _spec(model="detector", base="shapes:1", **fields), SHAPE, 2)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and message in info.value.message


def test_a_detector_base_gives_its_backbone_and_heads_and_a_new_heatmap(cnn, tmp_path):
    keras.utils.set_random_seed(2)
    first = _saved(detection.build_on(cnn, _spec(model="detector", base="shapes:1"), SHAPE, 3), tmp_path)
    spec = _spec(model="detector", base="shapes-detect:1", freeze="none")
    model = detection.build_on(first, spec, SHAPE, 2)
    assert _same(transfer.based_part(model).get_weights(), first.get_layer("backbone").get_weights())
    heads = [layer for layer in model.layers if layer.weights and layer.name != "backbone"]
    theirs = [layer for layer in first.layers if layer.weights and layer.name != "backbone"]
    for mine, old in zip(heads, theirs, strict=True):
        if mine.name == "heatmap":  # one channel per new class
            assert mine.get_weights()[0].shape[-1] == 2 and old.get_weights()[0].shape[-1] == 3
        else:
            assert _same(mine.get_weights(), old.get_weights()), mine.name
    assert tuple(model.output.shape[1:]) == (*detection.grid(16, 16), 2 + 4)
    _fit_once(model, 2)
    # a classifier started from a base (its layers nested) is a base too
    nested = _saved(models.build_on(cnn, _spec(model="cnn", base="shapes:1"), SHAPE, 2), tmp_path)
    backbone = transfer.based_part(detection.build_on(nested, _spec(model="detector", base="n:1"), SHAPE, 2))
    assert _same(backbone.get_weights(), transfer.based_part(nested).get_weights()[:4])


def test_a_mobilenet_v2_classifier_gives_its_trunk_up_to_the_detectors_feature_layer(tmp_path):
    keras.utils.set_random_seed(3)
    classifier = _saved(models.build(_spec(model="mobilenet_v2", alpha=0.35), [32, 32, 3], 2, "uint8"), tmp_path)
    model = detection.build_on(classifier, _spec(model="detector", base="m:1"), [32, 32, 3], 1)
    names = [layer.name for layer in transfer.leaves(transfer.based_part(model))]
    assert names[-1] == models.MOBILENET_FEATURES and "out_relu" not in names
    assert tuple(model.output.shape[1:]) == (8, 8, 1 + 4)  # stride 8 upsampled to 4
    mobilenet = next(layer for layer in classifier.layers if isinstance(layer, keras.Model))
    kernel = mobilenet.get_layer("Conv1").get_weights()[0]
    assert any(np.array_equal(kernel, w) for w in transfer.based_part(model).get_weights())


def test_a_base_without_convolutions_is_refused(tmp_path):
    mlp = _saved(models.build(_spec(model="mlp"), SHAPE, 2, "uint8"), tmp_path)
    with pytest.raises(Fail) as info:
        detection.backbone_of(mlp, "flat:1")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message.startswith("train.base: 'flat:1' has no convolutional layers a detector can sit on")
