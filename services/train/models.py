"""The model zoo and the export of a trained model with its preprocessing built in."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from cookline import tensors
from cookline.v1 import pipeline_pb2


def build(spec: pipeline_pb2.TrainSpec, num_features: int, num_classes: int) -> keras.Model:
    """The trainable network: it sees features already processed by the process service.

    mlp: ReLU hidden layers of hidden_units, then softmax; linear: softmax of one
    affine map (multinomial logistic regression; hidden_units is empty for it).
    """
    inputs = keras.Input(shape=(num_features,), name="features")
    x = inputs
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


def export(model: keras.Model, fitted_ops: list[pipeline_pb2.Op], num_features: int, path: str) -> None:
    """Writes a SavedModel whose serving_default takes RAW features and returns scores.

    The fitted preprocessing (standardize's mean and variance) becomes Keras
    preprocessing layers in front of the trained network, so serving (and TF
    Serving, and anyone loading the SavedModel) applies exactly what training did.
    """
    raw = keras.Input(shape=(num_features,), name="features", dtype="float32")
    x = raw
    for op in fitted_ops:
        if op.WhichOneof("kind") == "standardize":
            variance = tensors.to_numpy(op.fitted["variance"]).astype(np.float32)
            variance = np.where(variance == 0, 1.0, variance)  # as the process op does
            x = keras.layers.Normalization(mean=tensors.to_numpy(op.fitted["mean"]), variance=variance)(x)
        # shuffle (and other row-order ops) have no place at serving time.
    served = keras.Model(raw, model(x), name="served")

    archive = keras.export.ExportArchive()
    archive.track(served)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda features: {"scores": served(features, training=False)},
        input_signature=[tf.TensorSpec([None, num_features], tf.float32, name="features")],
    )
    archive.write_out(path, verbose=False)
