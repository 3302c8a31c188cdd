"""The model zoo and the export of a trained model with its preprocessing built in."""
from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from cookline import tensors
from cookline.v1 import pipeline_pb2
from services.process.ops import NOT_SERVED
from cookline.spec import train as train_spec


def build(spec: pipeline_pb2.TrainSpec, input_shape, num_classes: int, input_dtype: str = "float32",
          vocabulary_size: int = 0) -> keras.Model:
    """The trainable network: it sees the input tensor already processed by the process service.

    `input_shape` is the per-row shape (an int means [d]): tabular "features" [d], "image"
    [h, w, c] (uint8 pixels are scaled inside the network) or "tokens" [length] (int32 ids
    below `vocabulary_size`, 0 = padding). Every model ends in a softmax over the classes, or, with
    num_classes 0 (a regressor: mlp and linear), in one linear output trained on mean squared error.
    """
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(int(d) for d in input_shape)
    inputs = keras.Input(shape=shape, name="features", dtype=input_dtype)
    body = {"cnn": _cnn, "mobilenet_v2": _mobilenet_v2, "text": _text}.get(spec.model, _dense)
    x = body(spec, inputs, input_dtype, vocabulary_size)
    for units in spec.hidden_units:
        x = keras.layers.Dense(int(units), activation="relu")(x)
    if num_classes == 0:  # a regressor: one linear output
        outputs = keras.layers.Dense(1, name="scores")(x)
        loss, metrics = "mean_squared_error", ["mae"]
    else:
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="scores")(x)
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    model = keras.Model(inputs, outputs, name=spec.model)
    model.compile(optimizer=optimizer(spec), loss=loss, metrics=metrics)
    return model


def optimizer(spec: pipeline_pb2.TrainSpec) -> keras.optimizers.Optimizer:
    kind = {"sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}.get(spec.optimizer,
                                                                                  keras.optimizers.Adam)
    return kind(learning_rate=spec.learning_rate)


def _dense(spec, inputs, input_dtype, _vocabulary_size):
    """mlp and linear: the input flattened (pixels scaled to [0, 1] first)."""
    x = keras.layers.Rescaling(1.0 / 255)(inputs) if input_dtype == "uint8" else inputs
    return keras.layers.Flatten()(x) if len(inputs.shape) > 2 else x


def _cnn(spec, inputs, input_dtype, _vocabulary_size):
    """3x3 ReLU convolutions, each followed by 2x2 max pooling while the image is at least 2x2."""
    x = keras.layers.Rescaling(1.0 / 255)(inputs) if input_dtype == "uint8" else inputs
    height, width = int(inputs.shape[1]), int(inputs.shape[2])
    for filters in spec.conv_filters:
        x = keras.layers.Conv2D(int(filters), 3, padding="same", activation="relu")(x)
        if height >= 2 and width >= 2:
            x = keras.layers.MaxPooling2D(2)(x)
            height, width = height // 2, width // 2
    return keras.layers.Flatten()(x)


# MobileNetV2's batch-norm momentum is 0.999 (for ImageNet-length training); 0.9 lets the moving
# statistics that serving uses converge within a few epochs.
BATCH_NORM_MOMENTUM = 0.9


def mobilenet_size(spec: pipeline_pb2.TrainSpec, image_shape) -> int:
    """Side of the square image MobileNetV2 sees: input_size, else the image's larger side (at least 32)."""
    return int(spec.input_size) or max(train_spec.MIN_INPUT_SIZE, int(image_shape[0]), int(image_shape[1]))


def _mobilenet_v2(spec, inputs, input_dtype, _vocabulary_size):
    """MobileNetV2 without weights, on the image resized in-model, globally average-pooled."""
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs) if input_dtype == "uint8" else inputs
    size = mobilenet_size(spec, inputs.shape[1:])
    if (int(inputs.shape[1]), int(inputs.shape[2])) != (size, size):
        x = keras.layers.Resizing(size, size, interpolation="bilinear")(x)
    base = keras.applications.MobileNetV2(input_shape=(size, size, int(inputs.shape[3])), alpha=float(spec.alpha),
                                          include_top=False, weights=None, pooling="avg")
    for layer in base.layers:  # trained from scratch on small data: let the inference statistics keep up
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BATCH_NORM_MOMENTUM
    return base(x)


def _text(spec, inputs, _input_dtype, vocabulary_size):
    """A token embedding (id 0 is padding, masked) averaged over the sequence."""
    x = keras.layers.Embedding(vocabulary_size, int(spec.embedding_dim), mask_zero=True, name="embedding")(inputs)
    return keras.layers.GlobalAveragePooling1D()(x)


def served_ops(fitted_ops: list[pipeline_pb2.Op]) -> list[pipeline_pb2.Op]:
    """The ops the exported model applies: those after the last one it cannot reproduce."""
    last = max((i for i, op in enumerate(fitted_ops) if op.WhichOneof("kind") in NOT_SERVED), default=-1)
    return list(fitted_ops[last + 1:])


def _preprocess(x, op: pipeline_pb2.Op):
    """One fitted op as TF ops on the served input (None for ops with no place at serving time)."""
    kind = op.WhichOneof("kind")
    if kind == "standardize":
        variance = tensors.to_numpy(op.fitted["variance"]).astype(np.float32)
        variance = np.where(variance == 0, 1.0, variance)  # as the process op does
        return keras.layers.Normalization(mean=tensors.to_numpy(op.fitted["mean"]), variance=variance)(x)
    if kind == "min_max":
        lo = tensors.to_numpy(op.fitted["min"]).astype(np.float32)
        span = (tensors.to_numpy(op.fitted["max"]) - lo).astype(np.float32)
        span = np.where(span == 0, 1.0, span)
        return keras.layers.Normalization(mean=lo, variance=span ** 2)(x)
    if kind == "fill_missing":
        if (op.fill_missing.strategy or "mean") == "constant":
            value = np.float32(op.fill_missing.value)
        else:
            value = tensors.to_numpy(op.fitted["value"]).astype(np.float32)
        return keras.layers.Lambda(lambda t: tf.where(tf.math.is_nan(t), value, t))(x)
    if kind == "resize":
        return keras.layers.Resizing(int(op.resize.height), int(op.resize.width), interpolation="bilinear")(x)
    if kind == "grayscale":
        return keras.layers.Lambda(lambda t: t if t.shape[-1] == 1 else tf.image.rgb_to_grayscale(t[..., :3]))(x)
    return None  # shuffle and random augmentation: training only


# vectorize_text's id of a token not in the vocabulary (0 pads, 1 is unknown).
UNKNOWN_TOKEN = 1.0


def export(model: keras.Model, fitted_ops: list[pipeline_pb2.Op], raw_shape, path: str,
           raw_dtype: str = "float32") -> int:
    """Writes a SavedModel whose serving_default takes RAW "features" float32 [rows, d] and returns scores.

    A text model is served from vectorize_text's output: "features" are its token ids as floats.

    The fitted preprocessing (standardize, min_max, fill_missing, resize, grayscale)
    becomes layers in front of the trained network, so serving (and TF Serving, and
    anyone loading the SavedModel) applies exactly what training did. Image datasets
    are served as their raw pixels flattened to d = height * width * channels. Returns d.
    """
    shape = (raw_shape,) if isinstance(raw_shape, int) else tuple(int(v) for v in raw_shape)
    width = int(math.prod(shape))
    raw = keras.Input(shape=(width,), name="features", dtype="float32")
    x = raw
    if len(shape) > 1:
        x = keras.layers.Reshape(shape)(x)
    for op in served_ops(fitted_ops):
        y = _preprocess(x, op)
        x = x if y is None else y
    if model.inputs[0].dtype == "uint8":  # the network scales pixels itself: hand them over as uint8
        x = keras.layers.Lambda(lambda t: tf.cast(tf.clip_by_value(tf.round(t), 0, 255), tf.uint8))(x)
    elif model.inputs[0].dtype == "int32":  # token ids sent as floats; an id out of range is the unknown token
        ids = model.get_layer("embedding").input_dim
        x = keras.layers.Lambda(lambda t: tf.cast(tf.where((t >= 0) & (t < ids), tf.round(t), UNKNOWN_TOKEN),
                                                  tf.int32))(x)
    served = keras.Model(raw, model(x), name="served")

    archive = keras.export.ExportArchive()
    archive.track(served)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda features: {"scores": served(features, training=False)},
        input_signature=[tf.TensorSpec([None, width], tf.float32, name="features")],
    )
    archive.write_out(path, verbose=False)
    return width
