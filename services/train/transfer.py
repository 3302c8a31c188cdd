"""Starting from a model you already have (train.base) or from stored weights (train.weights):
loading the base, checking that it takes the data, freezing layers, and the second phase
(train.fine_tune) that unfreezes them.

A base is a Keras network that takes the tensor the process ops produce. A cookline model
version stores its network as NETWORK beside the SavedModel (the SavedModel takes raw inputs and
has the preprocessing built in, so it is not what a new network is built on). A base's last
layer, when it is a dense layer (a classifier's output), is dropped; models.build puts the new
head on what is left, nested as one layer named BASE. A detector keeps only the base's
convolutions, nested as BACKBONE (services/train/detection.py, build_on).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass

import grpc
import keras

from cookline import config
from cookline.spec import roots
from cookline.spec import train as train_spec
from cookline.v1 import pipeline_pb2
from services.common import layout
from services.common.errors import Fail, invalid, not_found
from services.common.store import ObjectStore, store_from_env

log = logging.getLogger("cookline.train")

# The trainable network of a model version (processed input in, scores out), for train.base.
NETWORK = "network.keras"
# Name of the nested model that holds the layers taken from the base (or the pretrained weights).
BASE = "base"
# Name of a detector's nested backbone (services/train/detection.py): what train.freeze and
# train.fine_tune.unfreeze count in a detector started from a base.
BACKBONE = "backbone"


@dataclass
class Base:
    """A loaded train.base: the Keras network, and where it came from (the lineage record,
    records_pb2.BaseModel's fields)."""

    network: keras.Model
    lineage: dict


def load(store: ObjectStore, spec: pipeline_pb2.TrainSpec) -> Base:
    """The base model train.base names, downloaded and loaded (into memory: its files are gone once
    this returns). NOT_FOUND (no such model, version, alias, file or object), FAILED_PRECONDITION (a
    model version stored without its network), PERMISSION_DENIED (a path outside
    COOKLINE_SOURCE_ROOTS), INVALID_ARGUMENT (not a Keras model), DATA_LOSS (stored bytes that
    changed); each names train.base."""
    with tempfile.TemporaryDirectory(prefix="cookline-base-") as folder:
        path, lineage = _fetch(store, spec.base, folder)
        return Base(_load_path(path, spec.base), lineage)


def _fetch(store: ObjectStore, base: str, into: str) -> tuple[str, dict]:
    """(local path of the base, its lineage record {"model", "version", "uri"})."""
    if not train_spec.is_path(base):  # the registry
        name, version, alias = train_spec.base_ref(base)
        version = layout.base_version(store, name, version, alias)
        recorded = layout.read_model_record(store, name, version).checksums
        prefix = layout.model_prefix(name, version)
        if NETWORK not in recorded:
            raise Fail(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"train.base: model {name!r} version {version} has no stored Keras network ({NETWORK}; versions "
                "published by an earlier cookline lack it): train that model again to start from it",
            )
        path = os.path.join(into, NETWORK)
        store.get_file(prefix + NETWORK, path, sha256=recorded[NETWORK])  # DATA_LOSS when it changed
        return path, {"model": name, "version": version, "uri": _uri(store, prefix)}
    if base.startswith("s3://"):
        from services.collect.sources.s3 import parse  # the one reading of s3://bucket/prefix

        bucket, key = parse(base, "train.base")
        remote = store_from_env(bucket=bucket)
        folder = key if not key or key.endswith("/") else key + "/"
        keys = [k for k in remote.list(key) if k == key or k.startswith(folder)]
        if not keys:
            raise not_found(f"train.base: no objects under {base!r}")
        if keys == [key]:  # one object: a .keras file
            path = os.path.join(into, os.path.basename(key))
            remote.get_file(key, path)
        else:  # a folder: a SavedModel (or a cookline model version)
            path = os.path.join(into, "model")
            for k in keys:
                remote.get_file(k, os.path.join(path, *k[len(folder) :].split("/")))
        return path, {"model": "", "version": 0, "uri": base}
    path = roots.check(os.path.abspath(base), config.source_roots(), "train.base")  # PERMISSION_DENIED
    if not os.path.exists(path):
        raise not_found(f"train.base: {base!r} not found on the train service's machine")
    roots.check_tree(path, config.source_roots(), "train.base")
    return path, {"model": "", "version": 0, "uri": path}


def _uri(store: ObjectStore, prefix: str) -> str:
    """Where a model version lies, as train.base could name it: s3://bucket/prefix, or the local store's folder."""
    bucket = getattr(store, "bucket", None)
    return f"s3://{bucket}/{prefix}" if bucket else os.path.join(getattr(store, "root", ""), *prefix.split("/"))


def _load_path(path: str, base: str) -> keras.Model:
    """A .keras file, a folder holding NETWORK (a cookline model version), or a SavedModel folder
    (wrapped as one frozen layer, keras.layers.TFSMLayer, on its serving_default signature)."""
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, NETWORK)):
        path = os.path.join(path, NETWORK)
    try:
        if os.path.isdir(path):
            if not os.path.isfile(os.path.join(path, "saved_model.pb")):
                raise invalid(f"train.base: {base!r} is a folder without saved_model.pb or {NETWORK}")
            return _saved_model(path, base)
        return keras.models.load_model(path, compile=False)
    except Fail:
        raise
    except Exception as exc:  # any loading failure means the file is not a Keras model
        raise invalid(
            f"train.base: {base!r} could not be loaded as a Keras model: {type(exc).__name__}: {exc}"
        ) from None


def _saved_model(path: str, base: str) -> keras.Model:
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default", trainable=False, name="saved_model")
    import tensorflow as tf

    function = tf.saved_model.load(path).signatures["serving_default"]
    specs = list(function.structured_input_signature[1].values())
    outputs = list(function.structured_outputs)
    if len(specs) != 1 or len(outputs) != 1:
        raise invalid(
            f"train.base: the SavedModel {base!r} takes {len(specs)} inputs and gives {len(outputs)} outputs; "
            "a base takes one tensor and gives one"
        )
    inputs = keras.Input(shape=tuple(specs[0].shape[1:]), dtype=specs[0].dtype.name)
    out = layer(inputs)
    return keras.Model(inputs, out[outputs[0]] if isinstance(out, dict) else out, name="saved_model")


def check_fits(network: keras.Model, spec: pipeline_pb2.TrainSpec, name: str, dtype: str, shape) -> None:
    """INVALID_ARGUMENT naming train.base unless the base takes one tensor of the data's per-row shape."""
    if len(network.inputs) != 1 or len(network.outputs) != 1:
        raise invalid(
            f"train.base: {spec.base!r} takes {len(network.inputs)} inputs and gives {len(network.outputs)} "
            "outputs; a base takes one tensor and gives one"
        )
    want = list(network.inputs[0].shape[1:])
    have = [int(d) for d in shape]
    if len(want) != len(have) or any(w is not None and int(w) != h for w, h in zip(want, have, strict=False)):
        shown = [("any" if w is None else int(w)) for w in want]
        raise invalid(
            f"train.base: {spec.base!r} takes input of shape {shown} per row, but the data gives {name!r} "
            f"{dtype} {have} after the process ops; make the data fit (e.g. a resize op to the base's image size)"
        )


def body(network: keras.Model) -> keras.Model:
    """The layers of the base a new head goes on: all but its last layer when that is a dense layer."""
    layers = [layer for layer in network.layers if not isinstance(layer, keras.layers.InputLayer)]
    if len(layers) > 1 and isinstance(layers[-1], keras.layers.Dense):
        # The head's input in this graph: a nested model's own .output (a base fine-tuned from a
        # base) would lead back into the nested graph and its own input layer.
        return keras.Model(network.inputs, layers[-1].input, name=BASE)
    return keras.Model(network.inputs, network.outputs[0], name=BASE)


def leaves(layer) -> list:
    """The layers of a (nested) model, in order from the input, nested models counted by their layers."""
    if isinstance(layer, keras.Model):
        out = []
        for inner in layer.layers:
            if not isinstance(inner, keras.layers.InputLayer):
                out.extend(leaves(inner))
        return out
    return [layer]


def based_part(model: keras.Model) -> keras.Model | None:
    """The nested model holding what came from the base or the pretrained weights (a detector's
    backbone), if any."""
    return next(
        (layer for layer in model.layers if layer.name in (BASE, BACKBONE) and isinstance(layer, keras.Model)), None
    )


def _set_trainable(layer, value: bool) -> None:
    """Sets `layer` and every layer nested in it trainable or not. Keras' own setter leaves the layers
    alone when a model cut from another's tensors has not listed them yet, and a loaded base keeps
    the trainable flags it was saved with."""
    layer.trainable = value
    if isinstance(layer, keras.Model):
        for inner in layer.layers:
            _set_trainable(inner, value)


def _count(value: str, layers: int, where: str, what: str, spec_value: str) -> int:
    count = train_spec.layer_count(value, where)
    if count > layers:
        raise invalid(f"{where}: {count} is more than the {layers} layers of the base ({spec_value}); {what}")
    return count


def freeze(model: keras.Model, spec: pipeline_pb2.TrainSpec) -> None:
    """Applies train.freeze to the base part of `model` (before compiling)."""
    part = based_part(model)
    if part is None:
        return
    _set_trainable(part, True)  # every layer, then those that stay frozen
    if spec.freeze in ("", "none"):
        return
    if spec.freeze == "base":
        _set_trainable(part, False)
        return
    layers = leaves(part)
    origin = spec.base or spec.weights
    count = _count(spec.freeze, len(layers), "train.freeze", "freeze fewer, or base for all", origin)
    for layer in layers[:count]:
        layer.trainable = False


def check_counts(model: keras.Model, spec: pipeline_pb2.TrainSpec) -> None:
    """INVALID_ARGUMENT before training when freeze or fine_tune.unfreeze counts more layers than the base has."""
    part = based_part(model)
    if part is not None:
        check_part(part, spec)


def check_part(part: keras.Model, spec: pipeline_pb2.TrainSpec) -> None:
    """check_counts on the part taken from the base (or the pretrained weights)."""
    layers, origin = len(leaves(part)), spec.base or spec.weights
    if any(isinstance(layer, keras.layers.TFSMLayer) for layer in leaves(part)):
        if spec.freeze != "base" or spec.HasField("fine_tune"):
            field = "train.fine_tune" if spec.freeze == "base" else "train.freeze"
            raise invalid(
                f"{field}: the base {origin!r} is a SavedModel, which trains only as a frozen whole (its variables "
                "cannot be updated layer by layer); keep train.freeze: base without fine_tune, or start from a "
                ".keras file"
            )
    if spec.freeze not in ("", "base", "none"):
        _count(spec.freeze, layers, "train.freeze", "freeze fewer, or base for all", origin)
    if spec.HasField("fine_tune") and spec.fine_tune.unfreeze != "all":
        _count(spec.fine_tune.unfreeze, layers, "train.fine_tune.unfreeze", "unfreeze fewer, or all", origin)


def unfreeze(model: keras.Model, spec: pipeline_pb2.TrainSpec) -> None:
    """The second phase's trainable layers (train.fine_tune.unfreeze): every frozen layer of the base, or
    its last N layers on top of those that trained already (before compiling again)."""
    part = based_part(model)
    if part is None:
        return
    layers = leaves(part)
    trained = [layer.trainable for layer in layers]
    _set_trainable(part, True)
    if spec.fine_tune.unfreeze == "all":
        return
    count = train_spec.layer_count(spec.fine_tune.unfreeze, "train.fine_tune.unfreeze")
    for i, layer in enumerate(layers):
        layer.trainable = trained[i] or i >= len(layers) - count


def imagenet_folder() -> str:
    """Where Keras keeps downloaded weights: KERAS_HOME/models (default ~/.keras/models; /tmp/.keras
    when the home folder is not writable, as Keras does)."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        user = os.path.expanduser("~")
        home = os.path.join(user if os.access(user, os.W_OK) else "/tmp", ".keras")
    return os.path.join(os.path.expanduser(home), "models")


def weights_file(spec: pipeline_pb2.TrainSpec, size: int) -> str:
    """The local weights file train.weights names for a MobileNetV2 of input side `size`. Nothing is
    downloaded: FAILED_PRECONDITION naming the file and train.weights when imagenet's file is absent;
    NOT_FOUND / PERMISSION_DENIED for a path that is absent / outside COOKLINE_SOURCE_ROOTS."""
    if spec.weights == "imagenet":
        name = train_spec.imagenet_weights_file(spec.alpha, size)
        path = os.path.join(imagenet_folder(), name)
        if not os.path.isfile(path):
            raise Fail(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"train.weights: imagenet needs Keras' weights file {name} at {path} (KERAS_HOME/models) on the "
                "train service's machine, and it is not there; nothing is downloaded at run time: place the file "
                "there (docs/pipeline.md, 'Starting from a model') or give its path as train.weights",
            )
        return path
    path = roots.check(os.path.abspath(spec.weights), config.source_roots(), "train.weights")
    if not os.path.isfile(path):
        raise not_found(f"train.weights: {spec.weights!r} not found on the train service's machine")
    return path
