"""TF.js exports of trained models, installed with npm into an app and asked raw inputs in Node
(@tensorflow/tfjs, pure JavaScript): the digits cnn gets PNG files, the text model sentences, an
iris mlp rows; each answer matches serve's scores for the same inputs (1e-4)."""

import json
import os
import pathlib
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import yaml
from google.protobuf import json_format
from PIL import Image

from cookline.v1 import gateway_pb2, pipeline_pb2
from helpers import EXAMPLES, SUPPORT
from services.process import ops as ops_lib

PREDICT = os.path.join(SUPPORT, "tfjs", "predict.mjs")
DIGITS = [
    os.path.join(EXAMPLES, "data", "digits", d, f)
    for d, f in [("0", "0000.png"), ("3", "0003.png"), ("7", "0007.png"), ("9", "0009.png")]
]
SENTENCES = [
    "The striker scored twice in the final.",
    "A bug in the database API",
    "Bake the bread and the cake",
    "quantum zebra",
]


def example(path: str, name: str, **train) -> str:
    """An example pipeline, renamed, trained briefly, exporting TF.js."""
    with open(path) as f:
        spec = yaml.safe_load(f)
    spec["name"] = name
    spec["collect"]["source"] = os.path.join(EXAMPLES, spec["collect"]["source"].removeprefix("examples/"))
    spec["train"].update(train)
    spec["train"].pop("early_stopping", None)
    spec["export"] = {"tfjs": True}
    return yaml.safe_dump(spec)


PIPELINES = {
    "tfjs-digits": example(os.path.join(EXAMPLES, "digits-cnn.yaml"), "tfjs-digits", epochs=2),
    "tfjs-text": example(os.path.join(EXAMPLES, "text.yaml"), "tfjs-text", epochs=3),
    "tfjs-iris": example(os.path.join(EXAMPLES, "iris.yaml"), "tfjs-iris", epochs=5),
}


@pytest.fixture(scope="module")
def exports(client, store, tmp_path_factory):
    """Trains the three pipelines at once; installs their TF.js folders with npm into one app.

    Returns name -> (cookline.json, installed package folder)."""

    def run(text):
        run = client.submit(text)
        list(client.watch(run.run_id))
        return client.get_run(run.run_id)

    with ThreadPoolExecutor(len(PIPELINES)) as pool:
        runs = dict(zip(PIPELINES, pool.map(run, PIPELINES.values()), strict=True))
    base = tmp_path_factory.mktemp("tfjs")
    folders, meta = [], {}
    for name, run in runs.items():
        assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
        prefix = f"models/{name}/{run.model.version}/"
        for key in store.list(prefix):
            store.get_file(key, str(base / name / key[len(prefix) :]))
        meta[name] = json.loads((base / name / "cookline.json").read_text())
        assert meta[name]["formats"] == ["saved_model", "tfjs"]
        folders.append(str(base / name / "tfjs"))
    app = base / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps({"name": "an-app", "private": True}))
    # --install-links copies each folder in (as a registry package would be), not a symlink to it
    done = subprocess.run(
        [
            "npm",
            "install",
            "--install-links",
            "--prefer-offline",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            *folders,
        ],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return {name: (meta[name], app / "node_modules" / f"cookline-model-{name}") for name in PIPELINES}


def node(package, inputs, tmp_path) -> list[dict]:
    path = tmp_path / "inputs.json"
    path.write_text(json.dumps(inputs))
    done = subprocess.run(["node", PREDICT, str(package), str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def served(client, name, meta, inputs) -> np.ndarray:
    """serve's scores for `inputs` (what the served signature takes), in class_names order."""
    return np.array([[r["scores"][c] for c in meta["class_names"]] for r in client.predict(name, inputs)])


def raw_contract(meta, name: str) -> bool:
    """True when the model takes the raw input `name` (a record with a kind): serve is then sent
    what the TF.js module is sent; else serve is sent what its older signature takes."""
    return "kind" in meta["inputs"].get(name, {})


def test_digits_cnn_takes_png_bytes(exports, client, tmp_path):
    meta, package = exports["tfjs-digits"]
    answers = node(package, [{"file": f} for f in DIGITS], tmp_path)
    if raw_contract(meta, "image"):
        inputs = {"image": [pathlib.Path(f).read_bytes() for f in DIGITS]}
    else:  # pixels, as collect decodes them
        inputs = [np.asarray(Image.open(f), np.float32).reshape(-1).tolist() for f in DIGITS]
    expected = served(client, "tfjs-digits", meta, inputs)
    np.testing.assert_allclose(np.array([a["scores"] for a in answers]), expected, atol=1e-4)
    assert [a["label"] for a in answers] == [meta["class_names"][i] for i in expected.argmax(axis=1)]
    preprocessing = json.loads((package / "preprocessing.json").read_text())
    assert preprocessing["inputs"]["image"]["image"] == {"height": 8, "width": 8, "channels": 1}


def test_text_model_takes_sentences(exports, client, tmp_path):
    meta, package = exports["tfjs-text"]
    answers = node(package, SENTENCES, tmp_path)
    if raw_contract(meta, "text"):
        inputs = {"text": SENTENCES}
    else:  # token ids, as the fitted ops make them
        fitted = [json_format.ParseDict(op, pipeline_pb2.Op()) for op in meta["process"]]
        fitted = [op for op in fitted if op.WhichOneof("kind") != "shuffle"]  # it would reorder the rows
        (batch,) = ops_lib.chain(fitted, [{"text": np.array(SENTENCES, dtype=object)}], epoch=0, training=False)
        inputs = batch["tokens"].astype(np.float32).tolist()
    expected = served(client, "tfjs-text", meta, inputs)
    np.testing.assert_allclose(np.array([a["scores"] for a in answers]), expected, atol=1e-4)
    assert [a["label"] for a in answers] == [meta["class_names"][i] for i in expected.argmax(axis=1)]


def test_tabular_model_takes_rows(exports, client, tmp_path):
    meta, package = exports["tfjs-iris"]
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    columns = meta["feature_columns"]
    answers = node(
        package,
        [rows[0], dict(zip(columns, rows[1], strict=True)), dict(zip(columns, map(str, rows[2]), strict=True))],
        tmp_path,
    )
    expected = served(client, "tfjs-iris", meta, rows)
    np.testing.assert_allclose(np.array([a["scores"] for a in answers]), expected, atol=1e-4)
