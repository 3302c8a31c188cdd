"""TensorFlow.js export: the TF.js "layers-model" format (model.json + one binary
weight shard), written directly from the trained Dense stack.

The fitted standardization is folded into the first Dense layer
(x_std @ W + b == x @ (W / std[:, None]) + (b - (mean / std) @ W)), so the
browser model takes raw features exactly like the SavedModel does.
"""
from __future__ import annotations

import json
import os

import keras
import numpy as np

from cookline import tensors
from services.common.errors import invalid
from services.process.ops import KINDS

SHARD = "group1-shard1of1.bin"


def _standardization(fitted_ops, num_features: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the fitted scaling ops composed in order (identity if none); INVALID_ARGUMENT
    for a served op that is not an affine scaling (training-only ops such as shuffle are skipped)."""
    mean, std = np.zeros(num_features, np.float64), np.ones(num_features, np.float64)
    for op in fitted_ops:
        kind = op.WhichOneof("kind")
        if kind == "standardize":
            m = tensors.to_numpy(op.fitted["mean"]).astype(np.float64)
            s = np.sqrt(tensors.to_numpy(op.fitted["variance"]).astype(np.float64))
        elif kind == "min_max":
            m = tensors.to_numpy(op.fitted["min"]).astype(np.float64)
            s = tensors.to_numpy(op.fitted["max"]).astype(np.float64) - m
        elif kind != "plugin" and not KINDS[kind].deterministic:
            continue  # shuffle, augmentation: training only
        else:
            raise invalid(f"export.tfjs: the op {kind!r} cannot be built into the browser model "
                          "(standardize and min_max can)")
        s[s == 0] = 1.0
        # applying (x - mean)/std, then (. - m)/s, is one affine map
        mean, std = mean + m * std, std * s
    return mean, std


def write(model: keras.Model, fitted_ops, num_features: int, name: str, directory: str) -> list[str]:
    """Writes model.json and the weight shard into `directory`; returns the file names."""
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    mean, std = _standardization(fitted_ops, num_features)
    layers, specs, blobs = [], [], []
    for i, layer in enumerate(dense):
        kernel, bias = (w.astype(np.float64) for w in layer.get_weights())
        if i == 0:  # fold the standardization into the first layer
            kernel, bias = kernel / std[:, None], bias - (mean / std) @ kernel
        layer_name = f"dense_{i}"
        config = {
            "name": layer_name, "trainable": True, "dtype": "float32", "units": int(kernel.shape[1]),
            "activation": layer.get_config()["activation"], "use_bias": True,
            "kernel_initializer": {"class_name": "Zeros", "config": {}},
            "bias_initializer": {"class_name": "Zeros", "config": {}},
            "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
            "kernel_constraint": None, "bias_constraint": None,
        }
        if i == 0:
            config["batch_input_shape"] = [None, num_features]
        layers.append({"class_name": "Dense", "config": config})
        for suffix, array in (("kernel", kernel), ("bias", bias)):
            specs.append({"name": f"{layer_name}/{suffix}", "shape": list(array.shape), "dtype": "float32"})
            blobs.append(array.astype("<f4").tobytes())
    manifest = {
        "format": "layers-model",
        "generatedBy": "cookline",
        "convertedBy": None,
        "modelTopology": {
            "class_name": "Sequential",
            "config": {"name": name, "layers": layers},
            "keras_version": "2.15.0",  # the topology dialect TF.js reads
            "backend": "tensorflow",
        },
        "weightsManifest": [{"paths": [SHARD], "weights": specs}],
    }
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, SHARD), "wb") as f:
        f.write(b"".join(blobs))
    with open(os.path.join(directory, "model.json"), "w") as f:
        json.dump(manifest, f)
    return ["model.json", SHARD]
