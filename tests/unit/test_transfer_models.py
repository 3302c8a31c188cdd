"""Building on a base in process (services/train/transfer.py, models.build): the new head, which
layers freeze and unfreeze, the fit check, and the ImageNet weights file read from KERAS_HOME."""

import os

import grpc
import h5py
import keras
import numpy as np
import pytest

from cookline.spec import train as train_spec
from cookline.v1 import pipeline_pb2
from services.common.errors import Fail
from services.train import models, transfer


def _spec(**fields) -> pipeline_pb2.TrainSpec:
    return train_spec.resolve(pipeline_pb2.TrainSpec(**fields))


@pytest.fixture(scope="module")
def network(tmp_path_factory) -> str:
    """A cnn trained on nothing, saved as a model version stores its network."""
    path = str(tmp_path_factory.mktemp("base") / transfer.NETWORK)
    models.build(_spec(model="cnn"), [16, 16, 1], 3, "uint8").save(path)
    return path


def _build(network: str, classes: int = 2, **fields) -> tuple[keras.Model, pipeline_pb2.TrainSpec]:
    spec = _spec(model="cnn", base="shapes:1", **fields)
    return models.build_on(keras.models.load_model(network, compile=False), spec, [16, 16, 1], classes), spec


def _trainable(model: keras.Model) -> list[bool]:
    return [layer.trainable for layer in transfer.leaves(transfer.based_part(model))]


def test_the_old_head_is_replaced_and_the_base_frozen(network):
    model, _ = _build(network, classes=2)
    assert model.output.shape[-1] == 2
    # rescaling, conv, pool, conv, pool, flatten, dense: the base's 3-class output is gone
    assert len(transfer.leaves(transfer.based_part(model))) == 7
    assert _trainable(model) == [False] * 7
    assert [w.path for w in model.trainable_weights] == ["scores/kernel", "scores/bias"]
    x, y = np.random.default_rng(0).integers(0, 255, (8, 16, 16, 1)).astype("uint8"), np.arange(8) % 2
    before = [w.numpy() for w in transfer.based_part(model).weights]
    model.fit(x, y, epochs=1, verbose=0)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, transfer.based_part(model).weights, strict=True))


def test_freezing_the_first_layers_and_unfreezing_the_last(network):
    model, spec = _build(network, freeze="6", fine_tune=pipeline_pb2.FineTune(epochs=1, unfreeze="3"))
    assert _trainable(model) == [False] * 6 + [True]
    transfer.unfreeze(model, spec)
    assert _trainable(model) == [False] * 4 + [True] * 3
    model, spec = _build(network, fine_tune=pipeline_pb2.FineTune(epochs=1))
    transfer.unfreeze(model, spec)  # unfreeze: all
    assert _trainable(model) == [True] * 7


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"freeze": "8"}, "train.freeze: 8 is more than the 7 layers of the base (shapes:1)"),
        (
            {"fine_tune": pipeline_pb2.FineTune(epochs=1, unfreeze="9")},
            "train.fine_tune.unfreeze: 9 is more than the 7 layers",
        ),
    ],
)
def test_counts_beyond_the_base_are_invalid(network, fields, message):
    with pytest.raises(Fail) as info:
        _build(network, **fields)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and message in info.value.message


def test_a_base_must_take_the_data(network):
    base = keras.models.load_model(network, compile=False)
    spec = _spec(model="cnn", base="shapes:1")
    transfer.check_fits(base, spec, "image", "uint8", [16, 16, 1])
    with pytest.raises(Fail) as info:
        transfer.check_fits(base, spec, "image", "uint8", [28, 28, 1])
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "train.base: 'shapes:1' takes input of shape [16, 16, 1] per row" in info.value.message
    assert "'image' uint8 [28, 28, 1]" in info.value.message


def test_a_saved_model_folder_is_a_base(tmp_path):
    inputs = keras.Input((4,))
    net = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(6, activation="relu")(inputs)))
    net.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    base = transfer._load_path(str(tmp_path / "sm"), "./sm")
    model = models.build_on(base, _spec(model="mlp", base="./sm"), [4], 2)
    model.fit(np.ones((4, 4), "float32"), np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    assert model.predict(np.ones((2, 4), "float32"), verbose=0).shape == (2, 2)
    with pytest.raises(Fail) as info:  # one opaque layer: trained only as a frozen whole
        models.build_on(base, _spec(model="mlp", base="./sm", freeze="none"), [4], 2)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "train.freeze: the base './sm' is a SavedModel" in (
        info.value.message
    )


def test_imagenet_weights_come_from_keras_home_or_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    spec = _spec(model="mobilenet_v2", weights="imagenet", alpha=0.35, input_size=96)
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    with pytest.raises(Fail) as info:
        models.build(spec, [32, 32, 1], 2, "uint8")
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert name in info.value.message and "train.weights" in info.value.message
    assert os.path.join(str(tmp_path), "models", name) in info.value.message

    # Keras' file format (legacy HDF5 weights of the network without its top), placed where Keras keeps it.
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(5)
    stored = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None)
    os.makedirs(tmp_path / "models")
    with h5py.File(tmp_path / "models" / name, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, stored)
    model = models.build(spec, [32, 32, 1], 2, "uint8")  # gray images: repeated into three channels
    part = transfer.based_part(model)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(part.weights, stored.weights, strict=True))
    assert not any(layer.trainable for layer in transfer.leaves(part))  # freeze: base by default


def test_a_base_saved_with_frozen_layers_trains_them_when_freeze_says_none(network, tmp_path):
    """A loaded network keeps the trainable flags it was saved with; freeze decides them anew."""
    saved = keras.models.load_model(network, compile=False)
    for layer in saved.layers[:4]:
        layer.trainable = False
    path = str(tmp_path / transfer.NETWORK)
    saved.save(path)
    spec = _spec(model="cnn", base="shapes:2", freeze="none")
    model = models.build_on(keras.models.load_model(path, compile=False), spec, [16, 16, 1], 2)
    assert all(layer.trainable for layer in transfer.leaves(transfer.based_part(model)))


def test_a_model_fine_tuned_from_a_base_is_a_base_again(network, tmp_path):
    """A fine-tuned classifier (its own base nested in it) saved and built on once more: its body is
    everything but its head, the same features the first fine-tuned model computed."""
    first, _ = _build(network, classes=2)
    path = str(tmp_path / transfer.NETWORK)
    first.save(path)
    second, _ = _build(path, classes=4)
    assert second.output.shape[-1] == 4
    # the first model's base (7 layers) is kept whole; only its 2-class head is dropped
    assert len(transfer.leaves(transfer.based_part(second))) == 7
    x = np.random.default_rng(1).integers(0, 255, (4, 16, 16, 1)).astype("uint8")
    np.testing.assert_allclose(transfer.body(second)(x), transfer.body(first)(x), rtol=1e-6)
