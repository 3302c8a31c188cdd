"""Small real SavedModels that take raw inputs exactly as the raw-input contract says
(docs/serving.md), published to a store the way train publishes a model: the
SavedModel files, then cookline.json last.

Their weights are set by hand, so the answers can be reasoned about:
  - "features"    float32 [rows, 3], numeric: the sum of the values pushes towards "pos";
  - "categorical" string [rows, 2] (colour, size), a lookup per column, unseen values
                  in bucket 0 (out of vocabulary): "green" and "large" push towards "pos";
  - "text"        string [rows]: lower-cased, split on non-letters, words looked up in a
                  vocabulary; "good"/"great"/"love" push towards "pos", "bad"/"awful"/"hate"
                  towards "neg";
  - "image"       string [rows], PNG/JPEG/GIF/BMP bytes decoded, resized to 16x16, scaled
                  to [0, 1] in the graph: a bright image is "pos", a dark one "neg".
`digits_model` is a small convolutional classifier of 28x28 grayscale images (random
weights, fixed seed) for the serving benchmark.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import tensorflow as tf

CLASSES = ["neg", "pos"]
COLOURS, SIZES = ["red", "green", "blue"], ["small", "large"]
POSITIVE, NEGATIVE = ["good", "great", "love"], ["bad", "awful", "hate"]
IMAGE = {"height": 16, "width": 16, "channels": 1}
ENCODINGS = ["png", "jpeg", "gif", "bmp"]
FEATURE_COLUMNS = ["a", "b", "c"]


def _lookup(keys: list[str]) -> tf.lookup.StaticHashTable:
    """A StringLookup: keys -> 1..n, anything else -> 0 (the out-of-vocabulary bucket)."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.range(1, len(keys) + 1, dtype=tf.int64)),
        default_value=0,
    )


def decode_images(encoded: tf.Tensor, height: int, width: int, channels: int) -> tf.Tensor:
    """Encoded image files [rows] -> float32 [rows, height, width, channels] in [0, 1]."""

    def one(data):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        return tf.image.resize(tf.cast(image, tf.float32) / 255.0, [height, width])

    return tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32))


class MixedModel(tf.Module):
    def __init__(self, inputs: tuple[str, ...], fill_missing: bool = False):
        super().__init__()
        self.inputs = inputs
        self.fill_missing = fill_missing
        self.colours, self.sizes = _lookup(COLOURS), _lookup(SIZES)
        self.words = _lookup(POSITIVE + NEGATIVE)
        self.classes = tf.constant(CLASSES)
        # logit of "pos" minus "neg" contributed by each lookup id (0 = out of vocabulary)
        self.colour_w = tf.constant([0.0, -1.0, 2.0, -0.5])
        self.size_w = tf.constant([0.0, -0.5, 1.0])
        self.word_w = tf.constant([0.0] + [1.5] * len(POSITIVE) + [-1.5] * len(NEGATIVE))
        specs = {
            "features": tf.TensorSpec([None, 3], tf.float32, name="features"),
            "categorical": tf.TensorSpec([None, 2], tf.string, name="categorical"),
            "text": tf.TensorSpec([None], tf.string, name="text"),
            "image": tf.TensorSpec([None], tf.string, name="image"),
        }
        self.serve = tf.function(self._serve, input_signature=[{n: specs[n] for n in inputs}])

    def _serve(self, args):
        logit = None

        def add(value):
            nonlocal logit
            logit = value if logit is None else logit + value

        if "features" in args:
            features = args["features"]
            if self.fill_missing:  # a fitted fill_missing op (strategy constant, value 0)
                features = tf.where(tf.math.is_nan(features), 0.0, features)
            add(tf.reduce_sum(features, axis=1) * 0.5)
        if "categorical" in args:
            cat = args["categorical"]
            add(
                tf.gather(self.colour_w, self.colours.lookup(cat[:, 0]))
                + tf.gather(self.size_w, self.sizes.lookup(cat[:, 1]))
            )
        if "text" in args:
            text = tf.strings.regex_replace(tf.strings.lower(args["text"]), "[^a-z]+", " ")
            ids = self.words.lookup(tf.strings.split(text))
            add(tf.reduce_sum(tf.gather(self.word_w, ids), axis=1))
        if "image" in args:
            images = decode_images(args["image"], IMAGE["height"], IMAGE["width"], IMAGE["channels"])
            add((tf.reduce_mean(images, axis=[1, 2, 3]) - 0.5) * 8.0)
        scores = tf.nn.softmax(tf.stack([-logit / 2, logit / 2], axis=1))
        return {"scores": scores, "label": tf.gather(self.classes, tf.argmax(scores, axis=1))}


def _record_inputs(inputs: tuple[str, ...]) -> dict:
    record = {
        "features": {"dtype": "float32", "shape": [-1, 3], "kind": "numeric", "columns": FEATURE_COLUMNS},
        "categorical": {"dtype": "string", "shape": [-1, 2], "kind": "category", "columns": ["colour", "size"]},
        "text": {"dtype": "string", "shape": [-1], "kind": "text", "columns": ["review"]},
        "image": {"dtype": "string", "shape": [-1], "kind": "image", "encodings": ENCODINGS, "image": IMAGE},
    }
    return {name: record[name] for name in inputs}


def mixed_model(
    path: str, inputs: tuple[str, ...] = ("features", "categorical", "text", "image"), fill_missing: bool = False
) -> dict:
    """Writes the SavedModel to `path`; returns its cookline.json "inputs"."""
    module = MixedModel(inputs, fill_missing)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return _record_inputs(inputs)


class DigitsModel(tf.Module):
    """PNG bytes -> decode, 28x28 gray, [0, 1] -> conv 3x3x8 -> relu -> pool -> dense 10."""

    def __init__(self, seed: int = 7):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.kernel = tf.Variable(rng.normal(0, 0.3, (3, 3, 1, 8)).astype(np.float32))
        self.dense = tf.Variable(rng.normal(0, 0.1, (13 * 13 * 8, 10)).astype(np.float32))
        self.classes = tf.constant([str(i) for i in range(10)])
        self.serve = tf.function(
            self._serve, input_signature=[{"image": tf.TensorSpec([None], tf.string, name="image")}]
        )

    def _serve(self, args):
        images = decode_images(args["image"], 28, 28, 1)
        x = tf.nn.relu(tf.nn.conv2d(images, self.kernel, 1, "VALID"))
        x = tf.nn.max_pool2d(x, 2, 2, "VALID")
        scores = tf.nn.softmax(tf.reshape(x, [-1, 13 * 13 * 8]) @ self.dense)
        return {"scores": scores, "label": tf.gather(self.classes, tf.argmax(scores, axis=1))}


def digits_model(path: str) -> dict:
    module = DigitsModel()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return {
        "image": {
            "dtype": "string",
            "shape": [-1],
            "kind": "image",
            "encodings": ENCODINGS,
            "image": {"height": 28, "width": 28, "channels": 1},
        }
    }


def publish(store, name: str, saved_dir: str, inputs: dict, class_names: list[str], **extra) -> int:
    """Publishes a SavedModel folder as the next version of `name`, cookline.json last (as train does)."""
    from services.common import layout

    claim = layout.claim_model_version(store, name)  # as train does: one publisher per version number
    version = claim.version
    files = {
        os.path.relpath(os.path.join(d, f), saved_dir).replace(os.sep, "/"): os.path.join(d, f)
        for d, _, names in os.walk(saved_dir)
        for f in names
    }
    features = inputs.get("features", {})
    meta = {
        "name": name,
        "version": version,
        "class_names": class_names,
        "feature_columns": features.get("columns", []),
        "inputs": inputs,
        "served_from_op": 0,
        "outputs": {"scores": {"dtype": "float32", "shape": [-1, len(class_names) or 1]}},
        "task": "classification" if class_names else "regression",
        "formats": ["saved_model"],
        "created_at": layout.now(),
        layout.CHECKSUMS: layout.checksums(files),  # as train records them
        **extra,
    }
    with claim:  # the record is written as given (old_record: as older versions wrote it)
        store.publish(claim.prefix, files, layout.MODEL_METADATA, json.dumps(meta).encode())
    return version


def publish_mixed(
    store,
    name: str = "raw",
    inputs: tuple[str, ...] = ("features", "categorical", "text", "image"),
    fill_missing: bool = False,
    old_record: bool = False,
) -> tuple[int, str]:
    """Builds and publishes a MixedModel; returns (version, a local copy of its SavedModel).
    fill_missing: the graph fills NaN features with 0 and the record lists the fitted op.
    old_record: cookline.json as published before raw inputs ("features" without kind)."""
    path = os.path.join(tempfile.mkdtemp(prefix=f"cookline-{name}-"), "saved_model")
    record = mixed_model(path, inputs, fill_missing)
    extra = {}
    if fill_missing:
        extra["process"] = [{"fill_missing": {"strategy": "constant", "value": 0.0}}]
    if old_record:
        record = {"features": {"dtype": "float32", "shape": [-1, 3]}}
        extra["feature_columns"] = FEATURE_COLUMNS
        extra["checksums"] = None  # published before checksums existed
    return publish(store, name, path, record, CLASSES, **extra), path


def png(value: int, size: int = 20, channels: int = 1) -> bytes:
    """A PNG of one grey level (0 dark .. 255 bright)."""
    return tf.io.encode_png(tf.fill([size, size, channels], tf.constant(value, tf.uint8))).numpy()


def jpeg(value: int, size: int = 24) -> bytes:
    return tf.io.encode_jpeg(tf.fill([size, size, 3], tf.constant(value, tf.uint8))).numpy()


def deploy_for_clients(env: dict, folder: str) -> dict:
    """Publishes and loads a text model ("texts") and an image model ("pics") on the stack of
    `env`, and writes a bright PNG into `folder`: the settings the Node and Go raw-input
    suites read (COOKLINE_RAW_TEXT_MODEL, COOKLINE_RAW_IMAGE_MODEL, COOKLINE_RAW_IMAGE_FILE)."""
    from cookline import channels
    from cookline.v1 import model_pb2, serve_pb2, serve_pb2_grpc
    from services.common.store import store_from_env

    store = store_from_env(env)
    serve = serve_pb2_grpc.ServeServiceStub(channels.channel("serve", env))
    for name, inputs in (("texts", ("text",)), ("pics", ("image",))):
        publish_mixed(store, name, inputs)
        serve.LoadModel(serve_pb2.LoadModelRequest(model=model_pb2.ModelRef(name=name)), timeout=180)
    picture = os.path.join(folder, "bright.png")
    with open(picture, "wb") as f:
        f.write(png(230))
    return {"COOKLINE_RAW_TEXT_MODEL": "texts", "COOKLINE_RAW_IMAGE_MODEL": "pics", "COOKLINE_RAW_IMAGE_FILE": picture}
