"""What the TF.js tests share: random weights for a Keras model, and a dataset field schema."""

from __future__ import annotations

import keras
import numpy as np

from cookline import tensors
from cookline.v1 import data_pb2


def randomize(model, seed=0):
    """Random weights everywhere, batch-norm variances kept positive."""
    rng = np.random.default_rng(seed)
    for layer in model.layers + [sub for m in model.layers if isinstance(m, keras.Model) for sub in m.layers]:
        for w in layer.weights:
            value = rng.normal(0, 0.3, w.shape).astype(np.float32)
            if w.name == "moving_variance":
                value = np.abs(value) + 0.5
            w.assign(value)


def field(name, dtype, shape, columns=()):
    """The FieldSchema of one dataset tensor."""
    return data_pb2.FieldSchema(name=name, dtype=tensors.data_type(np.dtype(dtype)), shape=shape, columns=columns)
