"""The model zoo and the export of a trained model with its preprocessing built in (raw inputs in)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from cookline import tensors
from cookline.spec import train as train_spec
from cookline.v1 import pipeline_pb2
from services.common import layout, plugins
from services.process import ops as ops_lib
from services.train import transfer


def build(
    spec: pipeline_pb2.TrainSpec, input_shape, num_classes: int, input_dtype: str = "float32", vocabulary_size: int = 0
) -> keras.Model:
    """The trainable network: it sees the input tensor already processed by the process service.

    `input_shape` is the per-row shape (an int means [d]): tabular "features" [d], "image"
    [h, w, c] (uint8 pixels are scaled inside the network) or "tokens" [length] (int32 ids
    below `vocabulary_size`, 0 = padding). Every model ends in a softmax over the classes, or, with
    num_classes 0 (a regressor: mlp and linear), in one linear output trained on mean squared error.
    """
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(int(d) for d in input_shape)
    inputs = keras.Input(shape=shape, name="features", dtype=input_dtype)
    plugin = train_spec.MODELS_REGISTRY.get(spec.model).plugin
    body = _plugin if plugin else {"cnn": _cnn, "mobilenet_v2": _mobilenet_v2, "text": _text}.get(spec.model, _dense)
    return _head(spec, inputs, body(spec, inputs, input_dtype, vocabulary_size), num_classes)


def build_on(base: keras.Model, spec: pipeline_pb2.TrainSpec, input_shape, num_classes: int) -> keras.Model:
    """The trainable network on train.base's network: the base without its old head (transfer.body),
    nested as transfer.BASE, then the head of `build`. The input takes the base's dtype (export casts
    to it); train.freeze is applied."""
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(int(d) for d in input_shape)
    inputs = keras.Input(shape=shape, name="features", dtype=base.inputs[0].dtype)
    x = transfer.body(base)(inputs, training=False)  # frozen or not, batch norm keeps its statistics
    if len(x.shape) > 2:
        x = keras.layers.Flatten()(x)
    return _head(spec, inputs, x, num_classes)


def _head(spec: pipeline_pb2.TrainSpec, inputs, x, num_classes: int) -> keras.Model:
    """The hidden dense layers and the output on the body's features `x`, compiled; train.freeze applied
    to what came from a base or pretrained weights."""
    for units in spec.hidden_units:
        x = keras.layers.Dense(int(units), activation="relu")(x)
    if num_classes == 0:  # a regressor: one linear output
        outputs = keras.layers.Dense(1, name="scores")(x)
    else:
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="scores")(x)
    model = keras.Model(inputs, outputs, name=spec.model)
    transfer.check_counts(model, spec)
    transfer.freeze(model, spec)
    compile_model(model, spec, num_classes, spec.learning_rate)
    return model


def compile_model(model: keras.Model, spec: pipeline_pb2.TrainSpec, num_classes: int, learning_rate: float) -> None:
    """Compiles with train.optimizer at `learning_rate`: cross-entropy for classes, mean squared error for
    a regressor (num_classes 0). Again after train.fine_tune changes which layers train."""
    if num_classes == 0:
        loss, metrics = "mean_squared_error", ["mae"]
    else:
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    model.compile(optimizer=optimizer(spec, learning_rate), loss=loss, metrics=metrics)


def optimizer(spec: pipeline_pb2.TrainSpec, learning_rate: float = 0.0) -> keras.optimizers.Optimizer:
    kind = {"sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}.get(spec.optimizer, keras.optimizers.Adam)
    return kind(learning_rate=learning_rate or spec.learning_rate)


def _dense(spec, inputs, input_dtype, _vocabulary_size):
    """mlp and linear: the input flattened (pixels scaled to [0, 1] first)."""
    x = keras.layers.Rescaling(1.0 / 255)(inputs) if input_dtype == "uint8" else inputs
    return keras.layers.Flatten()(x) if len(inputs.shape) > 2 else x


def cnn_features(spec, inputs, input_dtype):
    """The cnn backbone: 3x3 ReLU convolutions (train.conv_filters), each followed by 2x2 max pooling
    while the image is at least 2x2. Returns (feature map, its stride in pixels)."""
    x = keras.layers.Rescaling(1.0 / 255)(inputs) if input_dtype == "uint8" else inputs
    height, width = int(inputs.shape[1]), int(inputs.shape[2])
    stride = 1
    for filters in spec.conv_filters:
        x = keras.layers.Conv2D(int(filters), 3, padding="same", activation="relu")(x)
        if height >= 2 and width >= 2:
            x = keras.layers.MaxPooling2D(2)(x)
            height, width, stride = height // 2, width // 2, stride * 2
    return x, stride


def _cnn(spec, inputs, input_dtype, _vocabulary_size):
    """The cnn backbone, flattened."""
    return keras.layers.Flatten()(cnn_features(spec, inputs, input_dtype)[0])


# MobileNetV2's batch-norm momentum is 0.999 (for ImageNet-length training); 0.9 lets the moving
# statistics that serving uses converge within a few epochs.
BATCH_NORM_MOMENTUM = 0.9


def mobilenet_size(spec: pipeline_pb2.TrainSpec, image_shape) -> int:
    """Side of the square image MobileNetV2 sees: input_size, else the image's larger side (at least 32)."""
    return int(spec.input_size) or max(train_spec.MIN_INPUT_SIZE, int(image_shape[0]), int(image_shape[1]))


def _mobilenet_v2(spec, inputs, input_dtype, _vocabulary_size):
    """MobileNetV2 on the image resized in-model, globally average-pooled: randomly initialised, or
    with train.weights (ImageNet's, from a local file: transfer.weights_file), nested as transfer.BASE."""
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs) if input_dtype == "uint8" else inputs
    size = mobilenet_size(spec, inputs.shape[1:])
    if (int(inputs.shape[1]), int(inputs.shape[2])) != (size, size):
        x = keras.layers.Resizing(size, size, interpolation="bilinear")(x)
    channels = int(inputs.shape[3])
    if spec.weights and channels == 1:  # ImageNet weights take colour: gray repeated in three channels
        x, channels = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x]), 3
    base = _mobilenet(spec, size, channels, pooling="avg")
    return base(x, training=False) if spec.weights else base(x)  # pretrained: batch norm keeps its statistics


def _mobilenet(spec, size: int, channels: int, pooling=None) -> keras.Model:
    """MobileNetV2 without top: with train.weights (ImageNet's, from a local file: transfer.weights_file;
    nested as transfer.BASE, batch norms as stored), else randomly initialised with its batch norms set to
    BATCH_NORM_MOMENTUM."""
    base = keras.applications.MobileNetV2(
        input_shape=(size, size, channels),
        alpha=float(spec.alpha),
        include_top=False,
        weights=transfer.weights_file(spec, size) if spec.weights else None,
        pooling=pooling,
        **({"name": transfer.BASE} if spec.weights else {}),
    )
    if spec.weights:
        return base
    for layer in base.layers:  # trained from scratch on small data: let the inference statistics keep up
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BATCH_NORM_MOMENTUM
    return base


# The MobileNetV2 layer whose output is the detector's feature map (stride 8).
MOBILENET_FEATURES = "block_6_expand_relu"


def mobilenet_features(spec, inputs, input_dtype):
    """The mobilenet_v2 backbone of the detector: MobileNetV2 up to MOBILENET_FEATURES, on the image
    at its own size (at least 32 pixels a side). Returns (feature map, its stride in pixels)."""
    height, width = int(inputs.shape[1]), int(inputs.shape[2])
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs) if input_dtype == "uint8" else inputs
    size = max(train_spec.MIN_INPUT_SIZE, height, width)
    if (height, width) != (size, size):
        x = keras.layers.Resizing(size, size, interpolation="bilinear")(x)
    base = _mobilenet(spec, size, int(inputs.shape[3]))
    trunk = keras.Model(base.input, base.get_layer(MOBILENET_FEATURES).output, name="mobilenet_v2_trunk")
    return trunk(x), max(1, 8 * max(height, width) // size)


def _plugin(spec, inputs, input_dtype, _vocabulary_size):
    """A plugin's model family (a cookline.models entry point): its implementation's body."""
    family = train_spec.MODELS_REGISTRY.get(spec.model)
    return plugins.implementation(family)(train_spec.plugin_params(spec)).body(inputs, input_dtype)


def _text(spec, inputs, _input_dtype, vocabulary_size):
    """A token embedding (id 0 is padding, masked) averaged over the sequence."""
    x = keras.layers.Embedding(vocabulary_size, int(spec.embedding_dim), mask_zero=True, name="embedding")(inputs)
    return keras.layers.GlobalAveragePooling1D()(x)


# The raw inputs of an exported model, in signature order (the contract serve, the clients and
# TF.js share): numeric "features", "categorical" strings, "text" strings, encoded "image" bytes.
RAW_KINDS = layout.INPUT_KINDS
IMAGE_ENCODINGS = list(layout.IMAGE_ENCODINGS)


def raw_inputs(fields: dict, input_name: str, fitted_ops: list[pipeline_pb2.Op]) -> dict[str, dict]:
    """cookline.json "inputs": the collected tensors the model needs, name -> {dtype, shape, kind,
    columns / encodings / image}. `fields` is the dataset's schema (name -> FieldSchema).

    "tokens" come from "text"; "image" from "image"; "features" from the numeric columns plus the
    "categorical" ones (lookup, one_hot) and "text" (vectorize_text into a bag of words)."""
    kinds = {op.WhichOneof("kind") for op in fitted_ops}
    bag_of_words = any(
        op.WhichOneof("kind") == "vectorize_text" and (op.vectorize_text.mode or "tf_idf") != "int" for op in fitted_ops
    )
    if input_name == "tokens":
        used = {"text"}
    elif input_name == "image":
        used = {"image"}
    else:
        used = (
            {"features"}
            | ({"categorical"} if kinds & {"lookup", "one_hot"} else set())
            | ({"text"} if bag_of_words else set())
        )
    out = {}
    for name, kind in RAW_KINDS.items():
        if name not in used or name not in fields:
            continue
        field = fields[name]
        shape = [int(d) for d in field.shape]
        record: dict[str, Any] = {
            "dtype": "float32" if kind == "numeric" else "string",
            "shape": [-1] + shape,
            "kind": kind,
        }
        if kind == "image":
            record["shape"] = [-1]
            record["encodings"] = list(IMAGE_ENCODINGS)
            record["image"] = {"height": shape[0], "width": shape[1], "channels": shape[2]}
        elif list(field.columns):
            record["columns"] = list(field.columns)
        out[name] = record
    return out


def decode_images(data, height: int, width: int, channels: int, dtype="uint8"):
    """Encoded images (string [rows]: PNG, JPEG, GIF or BMP, any size) -> [rows, height, width,
    channels] pixels, as collect stores them: converted to the channels (grayscale by Pillow's
    integer luma formula, which collect uses), resized (bilinear, antialiased) when the size differs."""

    def one(encoded):
        if channels == 1:
            image = tf.io.decode_image(encoded, channels=0, expand_animations=False)  # GIF, BMP: no 1-channel decode
            have = tf.shape(image)[2]

            def luma():
                rgb = tf.cast(image[..., :3], tf.int32)
                weighted = rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000
                gray = tf.bitwise.right_shift(weighted, 16)
                return tf.cast(gray, tf.uint8)[..., None]

            image = tf.cond(have >= 3, luma, lambda: image[..., :1])
        else:
            image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
        size = tf.shape(image)[:2]
        same = tf.reduce_all(tf.equal(size, [height, width]))
        resized = tf.cond(
            same,
            lambda: tf.cast(image, tf.float32),
            lambda: tf.image.resize(tf.cast(image, tf.float32), [height, width], method="bilinear", antialias=True),
        )
        resized = tf.ensure_shape(resized, [height, width, channels])
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    images = tf.map_fn(one, data, fn_output_signature=tf.TensorSpec([height, width, channels], tf.uint8))
    return tf.cast(images, dtype)


@dataclass(frozen=True)
class Trained:
    """A trained network and what it was trained on: what an export needs."""

    model: keras.Model
    fitted_ops: list[pipeline_pb2.Op]  # the fitted ops its input went through, in pipeline order
    fields: dict  # the dataset's schema: tensor name -> FieldSchema
    input_name: str  # the processed tensor the network takes ("features", "image", "tokens")
    class_names: list[str]  # in score order; empty for a regressor


def export(trained: Trained, path: str) -> dict[str, dict]:
    """Writes a SavedModel whose serving_default takes the RAW collected tensors and returns "scores"
    (and, for a classifier, "label": the class name); returns cookline.json's "inputs".

    Every fitted op is built in (its in-graph form, OpKind.graph) in front of the trained network,
    after the images are decoded: serving (and TF Serving, and anyone loading the SavedModel with
    tf.saved_model.load) applies exactly what training did. Training-only ops (shuffle,
    augmentation) do nothing there.
    """
    model, fitted_ops, fields = trained.model, trained.fitted_ops, trained.fields
    input_name, class_names = trained.input_name, trained.class_names
    inputs = raw_inputs(fields, input_name, fitted_ops)
    names = list(inputs)
    steps = ops_lib.graph(fitted_ops)
    target = model.inputs[0].dtype
    labels = tf.constant(class_names, tf.string) if class_names else None
    image = inputs.get("image", {}).get("image")
    image_dtype = tensors.dtype_name(fields["image"].dtype) if image else "uint8"

    def serve(*args):
        raw = dict(zip(names, args, strict=True))
        if image:
            raw["image"] = decode_images(raw["image"], image["height"], image["width"], image["channels"], image_dtype)
        scores = model(tf.cast(steps(raw)[input_name], target), training=False)
        out = {"scores": scores}
        if labels is not None:
            out["label"] = tf.gather(labels, tf.argmax(scores, axis=1))
        return out

    archive = keras.export.ExportArchive()
    archive.track(model)
    for resource in steps.resources:
        archive.track(resource)
    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        input_signature=[
            tf.TensorSpec(
                [None] + inputs[n]["shape"][1:], tf.float32 if inputs[n]["dtype"] == "float32" else tf.string, name=n
            )
            for n in names
        ],
    )
    archive.write_out(path, verbose=False)
    return inputs
