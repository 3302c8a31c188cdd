"""The model zoo and the export of a trained model with its preprocessing built in."""
from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from cookline import tensors
from cookline.v1 import pipeline_pb2
from services.process.ops import NOT_SERVED


def build(spec: pipeline_pb2.TrainSpec, input_shape, num_classes: int, input_dtype: str = "float32") -> keras.Model:
    """The trainable network: it sees the input tensor already processed by the process service.

    `input_shape` is the per-row shape (an int means [d]): tabular "features" [d], or "image"
    [h, w, c], which the mlp flattens (uint8 pixels scaled to [0, 1] first). mlp: ReLU hidden
    layers of hidden_units, then softmax; linear: softmax of one affine map (multinomial
    logistic regression; hidden_units is empty for it).
    """
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(int(d) for d in input_shape)
    inputs = keras.Input(shape=shape, name="features", dtype=input_dtype)
    x = inputs
    if input_dtype == "uint8":
        x = keras.layers.Rescaling(1.0 / 255)(x)
    if len(shape) > 1:
        x = keras.layers.Flatten()(x)
    for units in spec.hidden_units:
        x = keras.layers.Dense(int(units), activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="scores")(x)
    model = keras.Model(inputs, outputs, name=spec.model)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=spec.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


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


def export(model: keras.Model, fitted_ops: list[pipeline_pb2.Op], raw_shape, path: str,
           raw_dtype: str = "float32") -> int:
    """Writes a SavedModel whose serving_default takes RAW "features" float32 [rows, d] and returns scores.

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
