"""The TF.js export of every zoo model, checked in Node with @tensorflow/tfjs (pure JavaScript).

Each model is built as training builds it, given random weights (and random batch-norm
statistics), exported with services.train.tfjs, and asked through the export's own module:
the network alone, and the whole raw path (raw row / sentence / PNG bytes -> fitted ops ->
network) against the Python ops (services.process.ops) and Keras on the same raw inputs.
"""

import io
import json
import os
import subprocess

import keras
import numpy as np
import pytest
from PIL import Image
from tfjs_models import field, randomize

from cookline.spec import train as train_spec
from cookline.v1 import pipeline_pb2
from helpers import SUPPORT
from services.collect.stats import tokens
from services.process import ops as ops_lib
from services.train import models, tfjs

NODE_MODULES = os.path.join(SUPPORT, "tfjs", "node_modules")
PREDICT = os.path.join(SUPPORT, "tfjs", "predict.mjs")


def export(tmp_path, model, fitted_ops, fields, class_names):
    """The export folder, with tests/support/tfjs's pinned packages where an app would have them."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    os.symlink(NODE_MODULES, tmp_path / "node_modules")
    folder = tmp_path / "model"
    trained = models.Trained(model, fitted_ops, {f.name: f for f in fields}, "", class_names)
    tfjs.write(trained, "zoo", 1, str(folder))
    return folder


def node(folder, inputs, tmp_path) -> list[dict]:
    path = tmp_path / "inputs.json"
    path.write_text(json.dumps(inputs))
    done = subprocess.run(["node", PREDICT, str(folder), str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def fit(ops, batch):
    fitted, _ = ops_lib.fit([pipeline_pb2.Op(**op) for op in ops], lambda: [batch])
    return fitted


def serve_path(fitted, batch, model):
    """What training's ops and the network give for raw rows (the reference the module must match)."""
    served = [op for op in fitted if ops_lib.KINDS[op.WhichOneof("kind")].deterministic]  # no shuffle
    (out,) = list(ops_lib.chain(served, [batch], epoch=0, training=False))
    name, _dtype, _shape = train_spec.model_input(
        model.name, {k: (str(v.dtype), list(v.shape[1:])) for k, v in out.items()}
    )
    x = out[name]
    x = x.astype(np.int32) if name == "tokens" else x
    return model.predict(x, verbose=0)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("family, categories", [("mlp", "one_hot"), ("linear", "lookup")])
def test_tabular_rows_with_categories_and_missing_values(tmp_path, family, categories):
    rng = np.random.default_rng(1)
    rows = 40
    features = rng.normal(5, 3, (rows, 3)).astype(np.float32)
    features[::7, 1] = np.nan
    colours = np.array(["red", "blue", "green", "blue"] * 10, dtype=object)
    sizes = np.array(["S", "M", "L", "XL", "M"] * 8, dtype=object)
    batch = {
        "features": features,
        "categorical": np.stack([colours, sizes], axis=1),
        "label": rng.integers(0, 3, rows).astype(np.int32),
    }
    fitted = fit(
        [{"fill_missing": {}}, {"standardize": {}}, {"shuffle": {"seed": 1}}, {categories: {}}, {"min_max": {}}], batch
    )
    schema = {"features": ("float32", [3]), "categorical": ("string", [2])}
    width = ops_lib.output_fields(schema, fitted)["features"][1]
    spec = train_spec.resolve(pipeline_pb2.TrainSpec(model=family))
    model = models.build(spec, width, 3)
    randomize(model)
    fields = [
        field("features", "float32", [3], ["a", "b", "c"]),
        field("categorical", "object", [2], ["colour", "size"]),
        field("label", "int32", []),
    ]
    folder = export(tmp_path, model, fitted, fields, ["x", "y", "z"])

    # raw rows, an unseen category and a missing number among them
    test = {
        "features": np.array([[4.0, np.nan, 1.5], [9.0, 2.0, -3.0], [5.0, 5.0, 5.0]], np.float32),
        "categorical": np.array([["red", "XL"], ["purple", "S"], ["green", ""]], dtype=object),
    }
    expected = serve_path(fitted, test, model)
    inputs = [
        {"a": 4.0, "b": None, "c": 1.5, "colour": "red", "size": "XL"},  # by column
        [9.0, 2.0, -3.0, "purple", "S"],  # in column order
        {"a": "5", "b": 5, "c": 5.0, "colour": "green", "size": ""},  # numbers as CSV text
    ]
    answers = node(folder, inputs, tmp_path)
    scores = np.array([a["scores"] for a in answers])
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert [a["label"] for a in answers] == [["x", "y", "z"][i] for i in expected.argmax(axis=1)]


@pytest.mark.parametrize(
    "family, spec_fields, ops",
    [
        ("cnn", {"conv_filters": [4, 8], "hidden_units": [16]}, []),
        ("mlp", {"hidden_units": [8]}, [{"grayscale": {}}]),
        ("mobilenet_v2", {"alpha": 0.35, "input_size": 32}, [{"resize": {"height": 10, "width": 12}}]),
    ],
)
def test_image_models_take_png_bytes(tmp_path, family, spec_fields, ops):
    rng = np.random.default_rng(2)
    channels = 1 if family == "cnn" else 3
    images = rng.integers(0, 256, (4, 8, 8, channels)).astype(np.uint8)
    batch = {"image": images, "label": np.zeros(4, np.int32)}
    fitted = fit(ops, batch) if ops else []
    shape = ops_lib.output_fields({"image": ("uint8", [8, 8, channels])}, fitted)["image"][1]
    spec = train_spec.resolve(pipeline_pb2.TrainSpec(model=family, **spec_fields))
    model = models.build(spec, shape, 4, "uint8")
    randomize(model)
    if family == "mobilenet_v2":  # the export flattens the nested base into one graph
        assert any(isinstance(layer, keras.Model) for layer in model.layers)
    folder = export(
        tmp_path,
        model,
        fitted,
        [field("image", "uint8", [8, 8, channels]), field("label", "int32", [])],
        ["a", "b", "c", "d"],
    )
    layers = {
        layer["class_name"]
        for layer in json.loads((folder / "model.json").read_text())["modelTopology"]["config"]["layers"]
    }
    if family == "mobilenet_v2":
        assert {
            "DepthwiseConv2D",
            "BatchNormalization",
            "ReLU",
            "ZeroPadding2D",
            "Add",
            "GlobalAveragePooling2D",
            tfjs.RESIZING,
        } <= layers

    expected = serve_path(fitted, batch, model)
    files = []
    for i, image in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(png(image))
        files.append({"file": str(tmp_path / f"{i}.png")})
    processed = list(ops_lib.chain(fitted, [batch], epoch=0, training=False))[0]["image"]
    answers = node(folder, files + [{"network": processed[:1].tolist()}], tmp_path)
    np.testing.assert_allclose(np.array([a["scores"] for a in answers[:4]]), expected, atol=1e-4)
    np.testing.assert_allclose(answers[4]["scores"], expected[0], atol=1e-4)


def test_text_model_takes_sentences_with_a_masked_average(tmp_path):
    texts = np.array(
        [
            "The striker scored twice",
            "A bug in the API",
            "Bake the bread; bake the cake!",
            "the the the",
            "Ünïcode wörds and CAPS",
            "x",
        ],
        dtype=object,
    )
    batch = {"text": texts, "label": np.arange(6, dtype=np.int32) % 3}
    fitted = fit([{"vectorize_text": {"mode": "int", "max_tokens": 12, "sequence_length": 6}}], batch)
    spec = train_spec.resolve(pipeline_pb2.TrainSpec(model="text", embedding_dim=8, hidden_units=[8]))
    vocabulary = len(fitted[0].fitted["vocabulary"].string_values) + 2
    model = models.build(spec, [6], 3, "int32", vocabulary)
    randomize(model)
    folder = export(
        tmp_path,
        model,
        fitted,
        [field("text", "object", []), field("label", "int32", [])],
        ["sports", "tech", "cooking"],
    )
    sentences = ["The striker scored", "bread and unknownword", "THE the", "Ünïcode wörds, twice over and over again"]
    expected = serve_path(fitted, {"text": np.array(sentences, dtype=object)}, model)
    answers = node(folder, sentences, tmp_path)
    # short sentences are mostly padding: a mean over every step (TF.js' own layer) would differ
    np.testing.assert_allclose(np.array([a["scores"] for a in answers]), expected, atol=1e-4)


def test_text_model_on_bag_of_words(tmp_path):
    texts = np.array(["good food", "bad food", "good good match", "a bad match"], dtype=object)
    batch = {"text": texts, "label": np.array([0, 1, 0, 1], np.int32)}
    fitted = fit([{"vectorize_text": {"mode": "tf_idf"}}, {"standardize": {}}], batch)
    width = ops_lib.output_fields({"text": ("string", [])}, fitted)["features"][1]
    model = models.build(train_spec.resolve(pipeline_pb2.TrainSpec(model="mlp")), width, 2)
    randomize(model)
    folder = export(tmp_path, model, fitted, [field("text", "object", []), field("label", "int32", [])], ["+", "-"])
    sentences = ["good match", "unheard of food"]
    expected = serve_path(fitted, {"text": np.array(sentences, dtype=object)}, model)
    answers = node(folder, sentences, tmp_path)
    np.testing.assert_allclose(np.array([a["scores"] for a in answers]), expected, atol=1e-4)


def test_tokens_match_python_on_every_code_point(tmp_path):
    """The module splits text exactly as services.collect.stats.tokens, whatever the script."""
    texts = [
        "Hello, World! it's 2024_x",
        "ÀÉÎ straße İstanbul ΣΊΣΥΦΟΣ ὈΔΥΣΣΕΎΣ",
        "日本語のテキスト、中文",
        "naïve café—x²½ ٣٤",
        "e\u0301 combining",
        "emoji 🙂 and 𝒳𝒴 math",
        "tab\tnew\nline",
    ]
    # every code point (but surrogates) once, in chunks, between spaces
    points = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    texts += [" ".join(points[i : i + 4096]) for i in range(0, len(points), 4096)]
    model = models.build(train_spec.resolve(pipeline_pb2.TrainSpec(model="linear")), 2, 2)
    folder = export(tmp_path, model, [], [field("features", "float32", [2], ["a", "b"])], ["a", "b"])
    answers = node(folder, [{"tokens": t} for t in texts], tmp_path)
    for text, answer in zip(texts, answers, strict=True):
        assert answer["tokens"] == tokens(text), text[:40]


@pytest.mark.parametrize("channels", [1, 3])
def test_raw_images_of_other_sizes_and_colors_become_the_datasets_pixels(tmp_path, channels):
    """A PNG of any size and color mode becomes the pixels the exported model makes of it: the
    dataset's channels (grayscale by Pillow's integer luma, as collect), then its size (bilinear,
    antialiased, as tf.image.resize(antialias=True)), rounded to 8-bit."""
    import tensorflow as tf

    model = models.build(train_spec.resolve(pipeline_pb2.TrainSpec(model="linear")), [8, 8, channels], 2, "uint8")
    folder = export(
        tmp_path, model, [], [field("image", "uint8", [8, 8, channels]), field("label", "int32", [])], ["a", "b"]
    )
    rng = np.random.default_rng(3)
    images = {
        "rgb-down.png": rng.integers(0, 256, (13, 21, 3)),
        "gray-up.png": rng.integers(0, 256, (5, 6, 1)),
        "rgba-same.png": rng.integers(0, 256, (8, 8, 4)),
        "rgb-mixed.png": rng.integers(0, 256, (30, 4, 3)),
    }
    expected = []
    for name, array in images.items():
        (tmp_path / name).write_bytes(png(array.astype(np.uint8)))
        with Image.open(tmp_path / name) as img:
            pixels = np.asarray(img.convert("L" if channels == 1 else "RGB"), np.float32).reshape(
                img.height, img.width, channels
            )
        if pixels.shape[:2] != (8, 8):
            pixels = tf.image.resize(pixels, [8, 8], method="bilinear", antialias=True).numpy()
        expected.append(np.clip(np.round(pixels), 0, 255).reshape(-1))
    answers = node(folder, [{"preprocess": {"file": str(tmp_path / n)}} for n in images], tmp_path)
    for name, answer, want in zip(images, answers, expected, strict=True):
        np.testing.assert_array_equal(np.array(answer["input"]), want, err_msg=name)


def test_bad_raw_inputs_throw_errors_naming_the_input(tmp_path):
    """As serve answers INVALID_ARGUMENT: a missing column, a value that is not a number, a missing
    value the model does not fill, infinity, a wrong number of values; bytes that are no image."""
    model = models.build(train_spec.resolve(pipeline_pb2.TrainSpec(model="linear")), 2, 2)
    folder = export(tmp_path / "rows", model, [], [field("features", "float32", [2], ["a", "b"])], ["x", "y"])
    answers = node(
        folder,
        [{"a": 1.0}, {"a": "one", "b": 2}, {"a": None, "b": 2}, {"a": "-Infinity", "b": 2}, [1.0], [1.0, 2.0]],
        tmp_path,
    )
    assert [a.get("error") for a in answers[:5]] == [
        "input: column b is missing",
        'input: column a must be a number, got "one"',
        "input: column a is missing (NaN), and the model has no fill_missing op; send a number",
        "input: column a: infinity is not accepted",
        "input: 1 values given, the model takes 2 (a, b)",
    ]
    assert answers[5]["label"] in ("x", "y")

    model = models.build(train_spec.resolve(pipeline_pb2.TrainSpec(model="linear")), [8, 8, 1], 2, "uint8")
    folder = export(tmp_path / "images", model, [], [field("image", "uint8", [8, 8, 1])], ["x", "y"])
    (tmp_path / "note.txt").write_text("not an image")
    answers = node(folder, [{"file": str(tmp_path / "note.txt")}, "a sentence"], tmp_path)
    assert answers[0] == {"error": "image: the bytes are not a PNG or JPEG image"}
    assert answers[1] == {"error": "image: expected PNG or JPEG bytes (Uint8Array, Buffer or ArrayBuffer)"}


def test_a_regressor_answers_its_value_and_no_label(tmp_path):
    rng = np.random.default_rng(4)
    batch = {"features": rng.normal(0, 2, (20, 2)).astype(np.float32), "label": rng.normal(0, 1, 20).astype(np.float32)}
    fitted = fit([{"standardize": {}}], batch)
    model = models.build(train_spec.resolve(pipeline_pb2.TrainSpec(model="mlp")), 2, 0)
    randomize(model)
    folder = export(tmp_path, model, fitted, [field("features", "float32", [2], ["a", "b"])], [])
    expected = serve_path(fitted, {"features": batch["features"][:3]}, model)
    answers = node(folder, batch["features"][:3].tolist(), tmp_path)
    assert [a["label"] for a in answers] == [None, None, None]
    np.testing.assert_allclose(np.array([a["scores"] for a in answers]), expected, atol=1e-5)
