"""End to end: the model zoo (mobilenet_v2 here; cnn and text in test_e2e_examples.py) and the
common training settings (optimizer, early stopping, class weights) through the five real services
on S3, each model answering after training, and models that do not fit the data's schema failing
the run naming train.model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cookline.v1 import gateway_pb2
from helpers import EXAMPLES, IRIS_CSV
from tools import published_model


def epochs_of(events):
    return [e.train.epoch for e in events if e.WhichOneof("event") == "train" and e.train.epoch_finished]


def digit_png(label: str, index: str) -> bytes:
    with open(os.path.join(EXAMPLES, "data", "digits", label, index), "rb") as f:
        return f.read()


def test_mobilenet_v2_trains_on_digits_resized_in_model_and_answers_png_bytes(client, store, tmp_path):
    run, events = client.run_file_and_wait(os.path.join(EXAMPLES, "digits-mobilenet.yaml"))
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    assert epochs_of(events) == [1, 2, 3]
    assert 0.0 <= run.evaluation.metrics["accuracy"] <= 1.0 and run.evaluation.rows == 359
    answer, _ = published_model(store, "digits-mobilenet", run.model.version, str(tmp_path))
    out = answer(image=np.array([digit_png("3", "0003.png"), digit_png("7", "0007.png")], dtype=object))
    assert all(label.decode() in [str(d) for d in range(10)] for label in out["label"])
    np.testing.assert_allclose(out["scores"].sum(axis=1), 1.0, atol=1e-4)


IRIS = """
name: {name}
collect: {{source: {source}, format: csv, label: species}}
process: [{{standardize: {{}}}}, {{shuffle: {{buffer: 1000, seed: 7}}}}]
split: {{validation: {validation}, seed: 7}}
train: {train}
"""


def iris(name, train, validation=0.2):
    return IRIS.format(name=name, source=IRIS_CSV, train=train, validation=validation)


def test_early_stopping_ends_training_when_the_validation_metric_stalls(client):
    run, events = client.run_and_wait(
        iris(
            "iris-stop",
            "{model: mlp, hidden_units: [16], epochs: 300, batch_size: 16, "
            "learning_rate: 0.01, early_stopping: {metric: val_accuracy, "
            "patience: 2}}",
        )
    )
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    epochs = epochs_of(events)
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) < 300


@pytest.mark.parametrize(
    "optimizer, learning_rate, weights",
    [
        ("sgd", 0.1, "{setosa: 3, versicolor: 1.5}"),
        ("rmsprop", 0.01, "balanced"),
    ],
)
def test_optimizers_and_class_weights_train_iris(client, store, optimizer, learning_rate, weights):
    name = f"iris-{optimizer}"
    run, _ = client.run_and_wait(
        iris(
            name,
            f"{{model: mlp, hidden_units: [16], epochs: 60, batch_size: 16, "
            f"learning_rate: {learning_rate}, optimizer: {optimizer}, "
            f"class_weights: {weights}}}",
        )
    )
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    assert run.evaluation.metrics["accuracy"] >= 0.8
    recorded = json.loads(store.get_bytes(f"models/{name}/{run.model.version}/cookline.json"))["pipeline"]["train"]
    assert recorded["optimizer"] == optimizer


@pytest.mark.parametrize(
    "train, validation, reason",
    [
        # an image model on tabular data
        ("{model: cnn}", 0.2, "train.model: 'cnn' is an image model and needs an 'image' tensor"),
        ("{model: mobilenet_v2}", 0.2, "train.model: 'mobilenet_v2' is an image model"),
        # a text model without token ids
        ("{model: text}", 0.2, "train.model: 'text' needs 'tokens' (a vectorize_text op with mode: int)"),
        ("{model: mlp, class_weights: {rose: 2}}", 0.2, "train.class_weights: 'rose' not among the dataset's classes"),
        ("{model: mlp, early_stopping: {patience: 2}}", 0, "train.early_stopping: needs validation rows"),
    ],
)
def test_a_model_or_setting_that_does_not_fit_the_data_fails_the_run_naming_the_field(
    client, train, validation, reason
):
    run, _ = client.run_and_wait(iris("iris-misfit", train, validation))
    assert run.state == gateway_pb2.RUN_STATE_FAILED
    assert "INVALID_ARGUMENT" in run.reason and reason in run.reason, run.reason


REGRESSION = """
name: {name}
collect: {{source: {source}, format: csv, label: y, numeric_label: true}}
process: [{{standardize: {{}}}}, {{shuffle: {{buffer: 1000, seed: 7}}}}]
split: {{validation: 0.2, seed: 7}}
train: {train}
evaluate: {{metric: r2, deploy_if_at_least: 0.8}}
"""


@pytest.fixture(scope="module")
def regression_csv(tmp_path_factory):
    """y = 3a - 2b + 0.5 plus a little noise: a numeric label for a regressor."""
    rng = np.random.default_rng(7)
    a, b = rng.uniform(-1, 1, 400), rng.uniform(-1, 1, 400)
    y = 3 * a - 2 * b + 0.5 + rng.normal(0, 0.05, 400)
    path = tmp_path_factory.mktemp("regression") / "linear.csv"
    path.write_text("a,b,y\n" + "".join(f"{p:.5f},{q:.5f},{t:.5f}\n" for p, q, t in zip(a, b, y, strict=True)))
    return str(path)


@pytest.mark.parametrize(
    "model, train",
    [
        (
            "mlp",
            "{model: mlp, hidden_units: [16], epochs: 60, batch_size: 16, learning_rate: 0.01, "
            "early_stopping: {metric: val_loss, patience: 5}}",
        ),
        ("linear", "{model: linear, epochs: 60, batch_size: 16, learning_rate: 0.05}"),
    ],
)
def test_mlp_and_linear_regress_a_numeric_label_and_serve_its_value(
    client, store, stack, tmp_path, regression_csv, model, train
):
    name = f"reg-{model}"
    run, events = client.run_and_wait(REGRESSION.format(name=name, source=regression_csv, train=train))
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    metrics = run.evaluation.metrics
    assert metrics["r2"] >= 0.9 and metrics["rmse"] >= metrics["mae"] > 0, dict(metrics)
    assert not run.evaluation.classes and not run.evaluation.confusion_matrix
    assert run.deployed and "validation r2" in run.deploy_decision
    assert {"loss", "mae", "val_loss", "val_mae"} <= set(run.metrics)
    meta = json.loads(store.get_bytes(f"models/{name}/{run.model.version}/cookline.json"))
    assert meta["task"] == "regression" and meta["class_names"] == [] and meta["outputs"]["scores"]["shape"] == [-1, 1]
    rows = client.predict(name, [[0.5, -0.5], [-0.2, 0.1]])
    assert [row["value"] for row in rows] == pytest.approx([3.0, -0.3], abs=0.5)
    sample = tmp_path / "rows.csv"
    sample.write_text("a,b\n0.5,-0.5\n-0.2,0.1\n")
    done = subprocess.run(
        [sys.executable, "-m", "cookline.cli", "predict", name, "--input", str(sample), "--stream"],
        env=stack[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert [float(line) for line in done.stdout.split()] == pytest.approx([3.0, -0.3], abs=0.5)


@pytest.mark.parametrize(
    "train, reason",
    [
        ("{model: text}", "train.model: 'text' is a classifier, but the dataset's label is numeric"),
        (
            "{model: mlp, early_stopping: {metric: val_accuracy, patience: 2}}",
            "train.early_stopping.metric: 'val_accuracy' needs class labels",
        ),
        ("{model: mlp, class_weights: balanced}", "train.class_weights: a regressor has no classes"),
    ],
)
def test_classifier_settings_on_a_numeric_label_fail_the_run_naming_the_field(client, regression_csv, train, reason):
    run, _ = client.run_and_wait(REGRESSION.format(name="reg-misfit", source=regression_csv, train=train))
    assert run.state == gateway_pb2.RUN_STATE_FAILED
    assert "INVALID_ARGUMENT" in run.reason and reason in run.reason, run.reason
