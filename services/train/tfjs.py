"""TensorFlow.js export: a folder a browser or Node app installs with npm and asks raw inputs.

`write` puts into one folder:
- model.json + group1-shard1of1.bin: the trained network in the TF.js "layers-model" format,
  its topology in the Keras 2 JSON dialect TF.js reads (class_name / config / inbound_nodes),
  nested models (MobileNetV2's base) flattened into one graph, weights named as TF.js' layers
  name them. Two layers TF.js has no faithful twin for are written as classes the module
  registers: Resizing (TF.js' own uses align_corners; Keras uses half-pixel centers) and
  GlobalAveragePooling1D (TF.js' own ignores the Embedding's padding mask).
- preprocessing.json: what turns the dataset's raw inputs into the network's input, in the
  order training applied it: the fitted standardize / min_max / fill_missing, the category
  tables of lookup / one_hot, vectorize_text's vocabulary and tokenization rule (the exact
  character class of services.collect.stats.tokens), image size, channels, resize and
  grayscale; and the class names.
- package.json + index.js (copied from tfjs_module/): `predict(input) -> {label, scores}`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sys

import keras
import numpy as np

from cookline import tensors
from cookline.spec import ops as spec_ops
from services.collect.stats import TOKEN
from services.common.errors import invalid
from services.process.ops import KINDS, kind_for
from services.train import models

SHARD = "group1-shard1of1.bin"
MODULE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tfjs_module")
FORMAT = "cookline-tfjs/1"
# The npm packages the module needs, pinned (tests/support/tfjs installs the same versions).
DEPENDENCIES = {"@tensorflow/tfjs": "4.22.0", "pngjs": "7.0.0", "jpeg-js": "0.4.4"}
# Classes index.js registers with TF.js (see the module docstring).
RESIZING = "CooklineResizing"
MASKED_AVERAGE = "CooklineGlobalAveragePooling1D"
_MASK = "<padding mask>"


# --- the network ---------------------------------------------------------------------------------


def _pair(value) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * 2


def _activation(config) -> str:
    name = config.get("activation", "linear")
    if not isinstance(name, str) or name not in ("linear", "relu", "softmax", "sigmoid", "tanh", "relu6"):
        raise invalid(f"export.tfjs: activation {name!r} has no TF.js counterpart")
    return name


def _weights(layer, rename: dict[str, str] | None = None) -> list[tuple[str, np.ndarray]]:
    """(TF.js weight name, value) of a layer; TF.js matches weights by "<layer>/<name>"."""
    rename = rename or {}
    return [(rename.get(w.name, w.name), np.asarray(w.numpy())) for w in layer.weights]


def _convert(class_name: str, config: dict, layer) -> tuple[str, dict, list[tuple[str, np.ndarray]]]:
    """One Keras 3 layer as (TF.js class, TF.js config in Keras 2 snake_case, weights)."""
    if class_name == "Dense":
        return (
            "Dense",
            {"units": int(config["units"]), "activation": _activation(config), "use_bias": bool(config["use_bias"])},
            _weights(layer),
        )
    if class_name in ("Conv2D", "DepthwiseConv2D"):
        if config.get("data_format", "channels_last") != "channels_last" or config.get("groups", 1) != 1:
            raise invalid(f"export.tfjs: {class_name} {layer.name!r} is not channels_last with groups 1")
        out = {
            "kernel_size": _pair(config["kernel_size"]),
            "strides": _pair(config["strides"]),
            "padding": config["padding"],
            "data_format": "channels_last",
            "dilation_rate": _pair(config["dilation_rate"]),
            "activation": _activation(config),
            "use_bias": bool(config["use_bias"]),
        }
        if class_name == "Conv2D":
            out["filters"] = int(config["filters"])
            return "Conv2D", out, _weights(layer)
        out["depth_multiplier"] = int(config["depth_multiplier"])
        return "DepthwiseConv2D", out, _weights(layer, {"kernel": "depthwise_kernel"})
    if class_name == "MaxPooling2D":
        return (
            "MaxPooling2D",
            {
                "pool_size": _pair(config["pool_size"]),
                "strides": _pair(config["strides"] or config["pool_size"]),
                "padding": config["padding"],
                "data_format": "channels_last",
            },
            [],
        )
    if class_name == "Flatten":
        return "Flatten", {}, []
    if class_name == "Rescaling":
        scale, offset = config["scale"], config["offset"]
        if isinstance(scale, (list, dict)) or isinstance(offset, (list, dict)):
            raise invalid(f"export.tfjs: Rescaling {layer.name!r} with per-channel scale is not supported")
        return "Rescaling", {"scale": float(scale), "offset": float(offset)}, []
    if class_name == "Resizing":
        if config.get("interpolation", "bilinear") != "bilinear" or config.get("crop_to_aspect_ratio"):
            raise invalid(f"export.tfjs: Resizing {layer.name!r} must be bilinear without cropping")
        return RESIZING, {"height": int(config["height"]), "width": int(config["width"])}, []
    if class_name == "BatchNormalization":
        if config["axis"] not in (-1, 3, [3], [-1]):
            raise invalid(f"export.tfjs: BatchNormalization {layer.name!r} must normalize the last axis")
        return (
            "BatchNormalization",
            {
                "axis": -1,
                "momentum": float(config["momentum"]),
                "epsilon": float(config["epsilon"]),
                "center": bool(config["center"]),
                "scale": bool(config["scale"]),
            },
            _weights(layer),
        )
    if class_name == "ReLU":
        if config.get("negative_slope") or config.get("threshold"):
            raise invalid(f"export.tfjs: ReLU {layer.name!r} with a slope or threshold has no TF.js counterpart")
        maximum = config.get("max_value")
        return "ReLU", {"max_value": None if maximum is None else float(maximum)}, []
    if class_name == "ZeroPadding2D":
        padding = config["padding"]
        padding = [_pair(p) for p in padding] if isinstance(padding, (list, tuple)) else [_pair(padding)] * 2
        return "ZeroPadding2D", {"padding": padding, "data_format": "channels_last"}, []
    if class_name == "Add":
        return "Add", {}, []
    if class_name == "GlobalAveragePooling2D":
        if config.get("keepdims"):
            raise invalid(f"export.tfjs: GlobalAveragePooling2D {layer.name!r} with keepdims is not supported")
        return "GlobalAveragePooling2D", {"data_format": "channels_last"}, []
    if class_name == "GlobalAveragePooling1D":
        if config.get("keepdims") or config.get("data_format", "channels_last") != "channels_last":
            raise invalid(f"export.tfjs: GlobalAveragePooling1D {layer.name!r} must be channels_last, no keepdims")
        return MASKED_AVERAGE, {}, []
    if class_name == "Embedding":
        return (
            "Embedding",
            {
                "input_dim": int(config["input_dim"]),
                "output_dim": int(config["output_dim"]),
                "mask_zero": bool(config["mask_zero"]),
                "input_length": None,
            },
            _weights(layer),
        )
    raise invalid(f"export.tfjs: the layer {class_name} ({layer.name!r}) has no TF.js counterpart here")


def _refs(refs) -> list[str]:
    """Layer names of a config's input_layers / output_layers (one [name, node, tensor] or a list of them)."""
    return [refs[0]] if refs and isinstance(refs[0], str) else [ref[0] for ref in refs]


def _tensors(args) -> list[dict]:
    """The __keras_tensor__ records among a node's call arguments (Add takes a list)."""
    out = []
    for arg in args:
        if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
            out.append(arg)
        elif isinstance(arg, (list, tuple)):
            out += _tensors(arg)
    return out


class _Graph:
    """A flat Keras 2 style functional topology built from (possibly nested) Keras 3 models."""

    def __init__(self):
        self.layers: list[dict] = []
        self.weights: list[tuple[str, np.ndarray]] = []
        self.names: set[str] = set()

    def add(self, model: keras.Model, sources: dict[str, str] | None) -> list[str]:
        """Adds `model`'s layers; `sources` maps its input layers to the outer layers feeding them
        (None: the top level, whose inputs become InputLayers). Returns its outputs' layer names."""
        config = model.get_config()
        alias: dict[str, str] = {}
        for entry in config["layers"]:
            name, class_name = entry["name"], entry["class_name"]
            if class_name == "InputLayer":
                if sources is None:
                    shape = list(entry["config"]["batch_shape"])
                    dtype = "int32" if entry["config"]["dtype"] in ("int32", "int64") else "float32"
                    self._emit(
                        {
                            "class_name": "InputLayer",
                            "name": name,
                            "inbound_nodes": [],
                            "config": {"batch_input_shape": shape, "dtype": dtype, "sparse": False, "name": name},
                        }
                    )
                    alias[name] = name
                else:
                    alias[name] = sources[name]
                continue
            if len(entry["inbound_nodes"]) != 1:
                raise invalid(
                    f"export.tfjs: layer {name!r} is called {len(entry['inbound_nodes'])} times; "
                    "the TF.js export takes layers called once"
                )
            args = entry["inbound_nodes"][0]["args"]
            inbound = [alias[t["config"]["keras_history"][0]] for t in _tensors(args)]
            if class_name == "NotEqual":  # Keras 3 records Embedding(mask_zero)'s mask as `ids != 0`;
                if list(args[1:]) != [0]:  # TF.js' Embedding hands the same mask down the graph itself
                    raise invalid(f"export.tfjs: the op {name!r} ({class_name}) has no TF.js counterpart here")
                alias[name] = _MASK
                continue
            if _MASK in inbound:
                raise invalid(f"export.tfjs: layer {name!r} takes a padding mask as an input")
            layer = model.get_layer(name)
            if isinstance(layer, keras.Model):  # a nested model: its layers join this graph
                inner_inputs = _refs(layer.get_config()["input_layers"])
                outputs = self.add(layer, dict(zip(inner_inputs, inbound, strict=True)))
                if len(outputs) != 1:
                    raise invalid(f"export.tfjs: nested model {name!r} has {len(outputs)} outputs, expected 1")
                alias[name] = outputs[0]
                continue
            tfjs_class, tfjs_config, weights = _convert(class_name, entry["config"], layer)
            tfjs_config.update({"name": name, "trainable": False, "dtype": "float32"})
            self._emit(
                {
                    "class_name": tfjs_class,
                    "name": name,
                    "config": tfjs_config,
                    "inbound_nodes": [[[source, 0, 0, {}] for source in inbound]],
                }
            )
            self.weights += [(f"{name}/{weight}", value) for weight, value in weights]
            alias[name] = name
        return [alias[name] for name in _refs(config["output_layers"])]

    def _emit(self, layer: dict) -> None:
        if layer["name"] in self.names:
            raise invalid(f"export.tfjs: two layers are named {layer['name']!r}")
        self.names.add(layer["name"])
        self.layers.append(layer)


def topology(model: keras.Model, name: str) -> tuple[dict, list[tuple[str, np.ndarray]]]:
    """(modelTopology for model.json, [(weight name, value)]) of a trained Keras model."""
    graph = _Graph()
    outputs = graph.add(model, None)
    inputs = [layer["name"] for layer in graph.layers if layer["class_name"] == "InputLayer"]
    return {
        "class_name": "Model",
        "config": {
            "name": name,
            "layers": graph.layers,
            "input_layers": [[n, 0, 0] for n in inputs],
            "output_layers": [[n, 0, 0] for n in outputs],
        },
        "keras_version": "2.15.0",  # the topology dialect TF.js reads
        "backend": "tensorflow",
    }, graph.weights


# --- the preprocessing ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def token_class() -> str:
    """The code points TOKEN's \\w matches in this Python, as a JavaScript character class body
    (for a regex with the `u` flag): the browser then splits text exactly as training did."""
    if not TOKEN.pattern.endswith("+"):
        raise ValueError(f"services.collect.stats.TOKEN {TOKEN.pattern!r} is no longer a run of one class")
    pattern = re.compile(TOKEN.pattern[:-1])
    ranges, start = [], None
    for cp in range(sys.maxunicode + 2):
        inside = cp <= sys.maxunicode and not 0xD800 <= cp <= 0xDFFF and pattern.match(chr(cp)) is not None
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            ranges.append(f"\\u{{{start:x}}}" if start == cp - 1 else f"\\u{{{start:x}}}-\\u{{{cp - 1:x}}}")
            start = None
    return "".join(ranges)


@functools.lru_cache(maxsize=1)
def lowercase_table() -> dict[str, str]:
    """str.lower() of every code point it changes, keyed by the code point in decimal: the browser
    lowercases with this Python's Unicode tables, not its own (which may know newer letters).
    Final sigma, the one rule that looks at neighbours, index.js applies as str.lower() does."""
    return {
        str(cp): chr(cp).lower()
        for cp in range(sys.maxunicode + 1)
        if not 0xD800 <= cp <= 0xDFFF and chr(cp).lower() != chr(cp)
    }


def _values(op, name: str) -> list:
    return tensors.to_numpy(op.fitted[name]).tolist()


def _strings(op, name: str) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in _values(op, name)]


def _step(op) -> dict | None:
    """One fitted op as a preprocessing step for index.js (None: training only)."""
    kind = op.WhichOneof("kind")
    if not kind_for(op).deterministic:
        return None  # shuffle, random augmentation
    if kind in ("standardize", "min_max", "fill_missing"):
        step = _scaling(op, kind)
        if "indices" in op.fitted:  # scoped to some numeric columns (their positions in "features")
            step["indices"] = [int(i) for i in _values(op, "indices")]
        return step
    if kind in ("lookup", "one_hot"):
        tables: list[list[str]] = []
        for value, column in zip(_strings(op, "vocabulary"), _values(op, "columns"), strict=True):
            while len(tables) <= column:
                tables.append([])
            tables[column].append(value)  # id = position + 1; 0 is "not in the table"
        return {"op": kind, "tables": tables}
    if kind == "vectorize_text":
        settings = KINDS[kind].settings(op, kind)  # mode and sequence_length with their defaults
        idf = np.asarray(_values(op, "idf"), np.float64)
        weights = np.concatenate([[idf.mean() if len(idf) else 0.0], idf]).astype(np.float32)
        return {
            "op": kind,
            "mode": settings["mode"],
            "sequence_length": int(settings["sequence_length"]),
            "vocabulary": _strings(op, "vocabulary"),
            "weights": weights.tolist(),
        }
    if kind == "resize":
        return {"op": kind, "height": int(op.resize.height), "width": int(op.resize.width)}
    if kind == "grayscale":
        return {"op": kind}
    raise invalid(f"export.tfjs: the op {spec_ops.kind_of(op)!r} has no browser counterpart")


def _scaling(op, kind: str) -> dict:
    """standardize and min_max as (x - offset) / scale, fill_missing as its values, all float32."""
    if kind == "fill_missing":
        if (op.fill_missing.strategy or "mean") == "constant":
            return {"op": kind, "constant": float(np.float32(op.fill_missing.value))}
        return {"op": kind, "values": np.asarray(_values(op, "value"), np.float32).tolist()}
    if kind == "standardize":
        offset = np.asarray(_values(op, "mean"), np.float32)
        scale = np.sqrt(np.asarray(_values(op, "variance"), np.float64)).astype(np.float32)
    else:
        offset = np.asarray(_values(op, "min"), np.float32)
        scale = (np.asarray(_values(op, "max"), np.float64) - np.asarray(_values(op, "min"), np.float64)).astype(
            np.float32
        )
    scale[scale == 0] = 1.0  # a constant column stays put, as the process op does
    return {"op": kind, "offset": offset.tolist(), "scale": scale.tolist()}


def _inputs(fields: dict, input_name: str, fitted_ops) -> dict:
    """The raw inputs the model takes: the SavedModel's (models.raw_inputs, one rule for both), with
    the image encodings the module decodes in Node (PNG and JPEG)."""
    out = models.raw_inputs(fields, input_name, fitted_ops)
    if not out:
        raise invalid(f"export.tfjs: the dataset has no raw input the model's {input_name!r} comes from")
    if "image" in out:
        out["image"]["encodings"] = ["png", "jpeg"]
    return out


def preprocessing(model: keras.Model, fitted_ops, fields: dict, class_names: list[str]) -> dict:
    """What index.js needs to turn raw inputs into the network's input (see the module docstring)."""
    steps = [s for s in (_step(op) for op in fitted_ops) if s is not None]
    model_input = model.inputs[0]
    integer = model_input.dtype in ("int32", "int64")
    input_name = "tokens" if integer else "image" if len(model_input.shape) >= 4 else "features"
    return {
        "format": FORMAT,
        "task": "classification" if class_names else "regression",
        "class_names": list(class_names),
        "inputs": _inputs(fields, input_name, fitted_ops),
        "steps": steps,
        # the tensor the network takes after the steps; uint8 images are sent as float32 pixel values
        "model_input": {
            "name": input_name,
            "dtype": "int32" if integer else "float32",
            "shape": [int(d) for d in model_input.shape[1:]],
        },
        # services.collect.stats.tokens: lowercase, then runs of these code points
        "tokens": {"lowercase": lowercase_table(), "class": token_class()},
    }


# --- the folder --------------------------------------------------------------------------------


def write(trained: models.Trained, name: str, version: int, directory: str) -> list[str]:
    """Writes the TF.js folder of version `version` of model `name` for `trained.model` (trained on
    its fitted ops' output of the dataset whose field schemas are `trained.fields`) into `directory`;
    returns the file names."""
    model, fitted_ops, fields, class_names = trained.model, trained.fitted_ops, trained.fields, trained.class_names
    model_topology, weights = topology(model, name)
    manifest = {
        "format": "layers-model",
        "generatedBy": "cookline",
        "convertedBy": None,
        "modelTopology": model_topology,
        "weightsManifest": [
            {"paths": [SHARD], "weights": [{"name": n, "shape": list(v.shape), "dtype": "float32"} for n, v in weights]}
        ],
    }
    package = {
        "name": f"cookline-model-{name}",
        "version": f"{version}.0.0",
        "description": f"cookline model {name} version {version} for TensorFlow.js: predict(raw input)",
        "type": "module",
        "main": "index.js",
        "exports": {".": "./index.js"},
        "files": ["index.js", "model.json", "preprocessing.json", SHARD],
        "dependencies": DEPENDENCIES,
        "browser": {"node:fs/promises": False, "node:path": False, "node:url": False, "pngjs": False, "jpeg-js": False},
    }
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, SHARD), "wb") as f:
        f.write(b"".join(np.ascontiguousarray(v, dtype="<f4").tobytes() for _n, v in weights))
    with open(os.path.join(directory, "model.json"), "w") as f:
        json.dump(manifest, f)
    with open(os.path.join(directory, "preprocessing.json"), "w") as f:
        json.dump(preprocessing(model, fitted_ops, fields, class_names), f)
    with open(os.path.join(directory, "package.json"), "w") as f:
        json.dump(package, f, indent=2)
    shutil.copyfile(os.path.join(MODULE, "index.js"), os.path.join(directory, "index.js"))
    return ["model.json", SHARD, "preprocessing.json", "package.json", "index.js"]
