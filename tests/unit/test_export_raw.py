"""The exported model takes raw inputs: tf.saved_model.load alone answers the collected tensors
(numbers, category strings, text, encoded images) as the streamed path does (the process ops on
the same rows, then the trained network), to 1e-6; and the in-graph tokenizer is collect's."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cookline import tensors
from cookline.spec import train as train_spec
from cookline.v1 import data_pb2
from cookline.v1 import pipeline_pb2 as pb
from services.collect.stats import tokens
from services.process import ops
from services.process.ops.text import graph_tokens
from services.train import models

TRICKY = [
    "Hello, World!",
    "ÉCOLE élève — Ünïcode's café",
    "ΟΔΟΣ Σίσυφος ΣΑΣ",
    "İstanbul straße ǅ",
    "snake_case and kebab-case.x",
    "tabs\tand\nnewlines  ",
    "",
    "   ",
    "!!!",
    "数字 123 ٣٤ ½ ⅷ",
    "e\u0301 combining",
    "emoji 😀 ok",
    "ABC123def",
    "don't STOP",
    "x_1 + y_2 = z_3",
]


def test_the_in_graph_tokenizer_is_collects_on_tricky_text():
    found = graph_tokens(tf.constant(TRICKY)).to_list()
    assert [[t.decode() for t in row] for row in found] == [tokens(t) for t in TRICKY]


def field(name, dtype, shape, columns=()):
    return data_pb2.FieldSchema(name=name, dtype=tensors.data_type(np.dtype(dtype)), shape=shape, columns=columns)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(buffer, "PNG")
    return buffer.getvalue()


def export_and_compare(tmp_path, model_name, op_list, batch, fields, raw, class_names=("a", "b", "c"), **train):
    """Fits the ops on `batch`, builds and exports the model, then compares the SavedModel's answer
    on `raw` with the network on the ops' output of the same rows."""
    fitted, _ = ops.fit(
        op_list, lambda: iter([batch]), list(fields["features"].columns) if "features" in fields else None
    )
    schema = {f.name: (tensors.dtype_name(f.dtype), list(f.shape)) for f in fields.values()}
    processed = ops.output_fields(schema, fitted)
    input_name, dtype, shape = train_spec.model_input(model_name, processed)
    texts = [op for op in fitted if op.WhichOneof("kind") == "vectorize_text"]
    vocabulary = len(texts[-1].fitted["vocabulary"].string_values) + 2 if texts else 0
    spec = pb.TrainSpec(model=model_name, learning_rate=0.01, **train)
    model = models.build(spec, shape, len(class_names), dtype, vocabulary)
    inputs = models.export(models.Trained(model, fitted, fields, input_name, list(class_names)), str(tmp_path))
    fixed = [op for op in fitted if ops.KINDS[op.WhichOneof("kind")].deterministic]  # rows in order
    streamed = next(ops.chain(fixed, iter([batch]), 0, training=False))
    expected = model(tf.cast(streamed[input_name], dtype), training=False).numpy()
    loaded = tf.saved_model.load(str(tmp_path))  # nothing of cookline needed to answer
    answer = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in raw.items()})
    np.testing.assert_allclose(answer["scores"].numpy(), expected, atol=1e-6, rtol=0)
    assert [v.decode() for v in answer["label"].numpy()] == [class_names[i] for i in expected.argmax(axis=1)]
    return inputs, loaded


def test_numeric_model_builds_in_fill_standardize_and_scoped_min_max(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(5, 3, (40, 3)).astype(np.float32)
    x[3, 1] = np.nan
    batch = {"features": x, "label": rng.integers(0, 3, 40).astype(np.int32)}
    fields = {"features": field("features", "float32", [3], ["a", "b", "c"])}
    op_list = [
        pb.Op(fill_missing=pb.FillMissingOp()),
        pb.Op(standardize=pb.StandardizeOp(columns=["a", "c"])),
        pb.Op(min_max=pb.MinMaxOp(columns=["b"])),
        pb.Op(shuffle=pb.ShuffleOp(seed=3)),
    ]
    inputs, _ = export_and_compare(tmp_path, "mlp", op_list, batch, fields, {"features": x}, hidden_units=[8])
    assert inputs == {"features": {"dtype": "float32", "shape": [-1, 3], "kind": "numeric", "columns": ["a", "b", "c"]}}


def test_category_model_takes_strings_and_sends_unseen_values_to_the_oov_bucket(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (30, 2)).astype(np.float32)
    colours = rng.choice(["red", "green", "blue"], (30, 1))
    sizes = rng.choice(["S", "M", "L", "XL"], (30, 1))
    cats = np.concatenate([colours, sizes], axis=1)
    batch = {"features": x, "categorical": cats, "label": rng.integers(0, 3, 30).astype(np.int32)}
    fields = {
        "features": field("features", "float32", [2], ["w", "h"]),
        "categorical": data_pb2.FieldSchema(
            name="categorical", dtype=tensors.DataType.DATA_TYPE_STRING, shape=[2], columns=["colour", "size"]
        ),
    }
    op_list = [pb.Op(standardize=pb.StandardizeOp()), pb.Op(one_hot=pb.OneHotOp())]
    inputs, loaded = export_and_compare(
        tmp_path / "one_hot", "mlp", op_list, batch, fields, {"features": x, "categorical": cats.astype(object)}
    )
    assert inputs["categorical"] == {
        "dtype": "string",
        "shape": [-1, 2],
        "kind": "category",
        "columns": ["colour", "size"],
    }
    # an unseen value answers (the unseen column), like a seen one
    answer = loaded.signatures["serving_default"](
        features=tf.constant(x[:2]), categorical=tf.constant([["purple", "S"], [" red ", "XXL"]])
    )
    assert answer["scores"].shape == (2, 3)
    export_and_compare(
        tmp_path / "lookup",
        "mlp",
        [pb.Op(lookup=pb.LookupOp())],
        batch,
        fields,
        {"features": x, "categorical": cats.astype(object)},
    )


SENTENCES = [
    "The match ended 2-1, a great GAME!",
    "Bake the bread at 200°C; let it rest.",
    "New CPU chips are faster.",
    "Crème brûlée: caramelise the sugar",
    "goal! goal! GOAL!",
    "Ünïcode ΣΑΣ text_here",
    "",
    "a new phone",
]


@pytest.mark.parametrize("mode", ["int", "tf_idf", "count", "multi_hot"])
def test_text_model_tokenizes_sentences_in_the_graph(tmp_path, mode):
    text = np.array(SENTENCES * 3, dtype=object)
    batch = {"text": text, "label": np.arange(len(text), dtype=np.int32) % 3}
    fields = {"text": field("text", "object", [])}
    op_list = [pb.Op(vectorize_text=pb.VectorizeTextOp(mode=mode, sequence_length=6, max_tokens=12))]
    model = "text" if mode == "int" else "mlp"
    raw = {"text": np.array(SENTENCES + ["never seen words at all"], dtype=object)}
    batch_raw = {"text": raw["text"], "label": np.zeros(len(raw["text"]), np.int32)}
    fitted, _ = ops.fit(op_list, lambda: iter([batch]))  # fitted on `batch`, compared on other rows
    schema = {"text": ("object", [])}
    name, dtype, shape = train_spec.model_input(model, ops.output_fields(schema, fitted))
    size = len(fitted[0].fitted["vocabulary"].string_values) + 2
    network = models.build(
        pb.TrainSpec(model=model, embedding_dim=4 if model == "text" else 0, learning_rate=0.01), shape, 3, dtype, size
    )
    inputs = models.export(models.Trained(network, fitted, fields, name, ["x", "y", "z"]), str(tmp_path))
    assert inputs == {"text": {"dtype": "string", "shape": [-1], "kind": "text"}}
    streamed = next(ops.chain(fitted, iter([batch_raw]), 0, training=False))
    expected = network(tf.cast(streamed[name], dtype), training=False).numpy()
    answer = tf.saved_model.load(str(tmp_path)).signatures["serving_default"](text=tf.constant(raw["text"]))
    np.testing.assert_allclose(answer["scores"].numpy(), expected, atol=1e-6, rtol=0)
    assert np.isfinite(answer["scores"].numpy()).all(), "an empty sentence must score like any other"


@pytest.mark.parametrize("channels", [1, 3])
def test_image_model_decodes_png_bytes_and_runs_resize_and_grayscale(tmp_path, channels):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (6, 10, 12, channels)).astype(np.uint8)
    batch = {"image": images, "label": np.arange(6, dtype=np.int32) % 3}
    fields = {"image": field("image", "uint8", [10, 12, channels])}
    op_list = [
        pb.Op(random_flip=pb.RandomFlipOp()),
        pb.Op(resize=pb.ResizeOp(height=7, width=9)),
        pb.Op(grayscale=pb.GrayscaleOp()),
    ]
    raw = {"image": np.array([png(i) for i in images], dtype=object)}
    inputs, loaded = export_and_compare(tmp_path, "cnn", op_list, batch, fields, raw, conv_filters=[4])
    assert inputs == {
        "image": {
            "dtype": "string",
            "shape": [-1],
            "kind": "image",
            "encodings": ["png", "jpeg", "gif", "bmp"],
            "image": {"height": 10, "width": 12, "channels": channels},
        }
    }
    # other encodings and sizes answer too (resized in the graph)
    others = []
    for fmt, size in (("JPEG", (24, 20)), ("GIF", (10, 12)), ("BMP", (5, 6))):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, size + (3,)).astype(np.uint8)).save(buffer, fmt)
        others.append(buffer.getvalue())
    answer = loaded.signatures["serving_default"](image=tf.constant(others, tf.string))
    assert answer["scores"].shape == (3, 3) and np.isfinite(answer["scores"].numpy()).all()
