"""End to end: the examples (digits.yaml, digits-cnn.yaml, text.yaml, fruit.yaml) through the five real
services on S3, each model answering raw inputs (PNG bytes, sentences, rows with category strings) with
tf.saved_model.load alone; schema warnings in the run events and strict: true failing a run; training
that does not depend on luck (equal metrics twice, a class-ordered image folder trained without a
shuffle op)."""

import io
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from cookline.v1 import gateway_pb2
from helpers import EXAMPLES
from tools import published_model


def serve_agrees(client, name: str, inputs: dict, out: dict) -> None:
    """serve's answer to the same raw inputs is the SavedModel's (tf.saved_model.load) to 1e-6."""
    rows = client.predict(name, inputs)
    assert [row["label"] for row in rows] == [v.decode() for v in out["label"]]
    served = np.array([list(row["scores"].values()) for row in rows])
    np.testing.assert_allclose(served, out["scores"], atol=1e-6, rtol=0)


def cli_label(env, *args) -> str:
    """The label `cookline predict NAME ... --output json` prints for one row (the README's commands)."""
    done = subprocess.run(
        [sys.executable, "-m", "cookline.cli", "predict", *args, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["label"]


def png_file(label: str, index: str) -> bytes:
    with open(os.path.join(EXAMPLES, "data", "digits", label, index), "rb") as f:
        return f.read()


def test_digits_example_trains_on_8x8_pngs_and_answers_png_bytes(client, store, tmp_path):
    run, events = client.run_file_and_wait(os.path.join(EXAMPLES, "digits.yaml"))
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    assert run.metrics["val_accuracy"] >= 0.85
    ingest = [e.ingest for e in events if e.WhichOneof("event") == "ingest"][-1]
    assert ingest.dataset.num_rows == 1797
    assert dict(ingest.dataset.statistics.image_shapes) == {"8x8x1": 1797}
    assert len(ingest.dataset.statistics.label_counts) == 10
    answer, meta = published_model(store, "digits", run.model.version, str(tmp_path))
    assert meta["inputs"]["image"]["image"] == {"height": 8, "width": 8, "channels": 1}
    # the PNG file, and the same digit as an RGB JPEG four times the size
    jpeg = io.BytesIO()
    Image.open(os.path.join(EXAMPLES, "data", "digits", "0", "0000.png")).convert("RGB").resize(
        (32, 32), Image.NEAREST
    ).save(jpeg, "JPEG", quality=95)
    images = [png_file("0", "0000.png"), jpeg.getvalue()]
    out = answer(image=np.array(images, dtype=object))
    assert out["label"][0] == b"0"
    serve_agrees(client, "digits", {"image": images}, out)


def test_fruit_example_infers_category_columns_and_answers_raw_rows(client, store, env, tmp_path):
    run, events = client.run_file_and_wait(os.path.join(EXAMPLES, "fruit.yaml"))
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    assert run.evaluation.metrics["accuracy"] >= 0.8, dict(run.evaluation.metrics)
    dataset = [e.ingest for e in events if e.WhichOneof("event") == "ingest"][-1].dataset
    fields = {f.name: list(f.columns) for f in dataset.fields}
    assert fields["features"] == ["weight_g", "diameter_cm", "sweetness"]
    assert fields["categorical"] == ["colour", "origin"]
    answer, meta = published_model(store, "fruit", run.model.version, str(tmp_path))
    assert meta["inputs"] == {
        "features": {
            "dtype": "float32",
            "shape": [-1, 3],
            "kind": "numeric",
            "columns": ["weight_g", "diameter_cm", "sweetness"],
        },
        "categorical": {"dtype": "string", "shape": [-1, 2], "kind": "category", "columns": ["colour", "origin"]},
    }
    rows = {
        "features": [[120, 3.4, 8.2], [88, 6.1, 1.9], [110, 3.6, 7.9]],
        "categorical": [["yellow", "ecuador"], ["yellow", "spain"], ["yellow", "mars"]],
    }
    out = answer(features=np.array(rows["features"], np.float32), categorical=np.array(rows["categorical"], object))
    assert [v.decode() for v in out["label"]] == ["banana", "lemon", "banana"]  # an unseen origin still answers
    serve_agrees(client, "fruit", rows, out)
    row = tmp_path / "row.csv"
    row.write_text("weight_g,diameter_cm,sweetness,colour,origin\n88,6.1,1.9,yellow,spain\n")
    assert cli_label(env, "fruit", "--input", str(row)) == "lemon"


TF_IDF_MLP = """
name: text-tfidf
collect: {{source: {source}, format: text-csv}}
process: [{{vectorize_text: {{mode: tf_idf, max_tokens: 2000}}}}, {{shuffle: {{buffer: 1000, seed: 7}}}}]
split: {{validation: 0.2, seed: 7}}
train: {{model: mlp, hidden_units: [32], epochs: 30, batch_size: 16, learning_rate: 0.005}}
"""


def test_text_example_answers_sentences(client, store, env, tmp_path):
    run, _ = client.run_file_and_wait(os.path.join(EXAMPLES, "text.yaml"))
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    evaluation = run.evaluation
    baseline = max(c.support for c in evaluation.classes) / evaluation.rows
    assert evaluation.metrics["accuracy"] >= baseline + 0.2, (evaluation.metrics["accuracy"], baseline)
    answer, meta = published_model(store, "text", run.model.version, str(tmp_path))
    assert meta["inputs"] == {"text": {"dtype": "string", "shape": [-1], "kind": "text"}}
    sentences = ["The goalkeeper was injured during the derby!", "BAKE the bread; add garlic & tomato."]
    out = answer(text=np.array(sentences, dtype=object))
    assert [v.decode() for v in out["label"]] == ["sports", "cooking"]
    serve_agrees(client, "text", {"text": sentences}, out)
    assert cli_label(env, "text", "--text", sentences[0]) == "sports"


def test_digits_cnn_example_answers_png_bytes(client, store, env, tmp_path):
    run, _ = client.run_file_and_wait(os.path.join(EXAMPLES, "digits-cnn.yaml"))
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    assert run.evaluation.rows == 359 and run.evaluation.metrics["accuracy"] >= 0.9 and run.deployed
    answer, _ = published_model(store, "digits-cnn", run.model.version, str(tmp_path))
    images = [png_file("7", "0007.png"), png_file("3", "0003.png")]
    out = answer(image=np.array(images, dtype=object))
    assert [v.decode() for v in out["label"]] == ["7", "3"]
    serve_agrees(client, "digits-cnn", {"image": images}, out)
    assert cli_label(env, "digits-cnn", "--image", os.path.join(EXAMPLES, "data", "digits", "7", "0007.png")) == "7"


def test_text_example_data_trains_an_mlp_on_tf_idf(client, store, tmp_path):
    # examples/text.yaml trains the text model (tests/e2e/test_zoo.py); this is its data as a bag of words
    run, events = client.run_and_wait(TF_IDF_MLP.format(source=os.path.join(EXAMPLES, "data", "text.csv")))
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    assert run.metrics["val_accuracy"] >= 0.9
    dataset = [e.ingest for e in events if e.WhichOneof("event") == "ingest"][-1].dataset
    assert dataset.num_rows == 360 and dataset.statistics.text.vocabulary_size > 50
    answer, meta = published_model(store, "text-tfidf", run.model.version, str(tmp_path))
    assert meta["inputs"] == {"text": {"dtype": "string", "shape": [-1], "kind": "text"}}
    out = answer(text=np.array(["The startup shipped a new database API."], dtype=object))
    assert out["label"][0] == b"technology" and out["scores"].shape == (1, 3)
    serve_agrees(client, "text-tfidf", {"text": ["The startup shipped a new database API."]}, out)


PIPELINE = """
name: drifting
strict: {strict}
collect: {{source: {source}, format: csv, label: label}}
train: {{model: mlp, epochs: 1}}
"""


def test_schema_anomalies_are_run_event_warnings_and_strict_fails_the_run(client, tmp_path):
    first = tmp_path / "v1.csv"
    first.write_text("a,b,label\n" + "".join(f"{i},{i % 7},c{i % 2}\n" for i in range(40)))
    run, _ = client.run_and_wait(PIPELINE.format(strict="false", source=first))
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    second = tmp_path / "v2.csv"
    second.write_text("a,b,label\n" + "".join(f"{i * 10},{i % 7},c{i % 2}\n" for i in range(40)))
    run, events = client.run_and_wait(PIPELINE.format(strict="false", source=second))
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    warnings = [a for e in events if e.WhichOneof("event") == "ingest" for a in e.ingest.anomalies]
    assert [(a.kind, a.field) for a in warnings] == [("out_of_range", "features.a")]
    assert any("1 schema warnings" in e.stage.message for e in events if e.WhichOneof("event") == "stage")
    third = tmp_path / "v3.csv"
    third.write_text("a,label\n" + "".join(f"{i * 100},c{i % 2}\n" for i in range(40)))
    run, _ = client.run_and_wait(PIPELINE.format(strict="true", source=third))
    assert run.state == gateway_pb2.RUN_STATE_FAILED
    assert "collect failed: FAILED_PRECONDITION" in run.reason and "features.b" in run.reason
