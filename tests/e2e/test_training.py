"""Training on the live stack: held-out evaluation, the deploy gate, cancellation."""

import json
import os

import grpc
import pytest

from cookline.v1 import data_pb2, gateway_pb2
from helpers import IRIS_CSV, iris_pipeline, report_page


def pipeline(name: str, train: str, split: str = "{validation: 0.2, seed: 7}", evaluate: str = "") -> str:
    return iris_pipeline(
        name, process="[{standardize: {}}, {shuffle: {seed: 3}}]", split=split, train=train, evaluate=evaluate or None
    )


def test_held_out_evaluation_and_a_passed_gate(client, store):
    run, events = client.run_and_wait(
        pipeline(
            "gated",
            "{model: mlp, hidden_units: [16], epochs: 60, batch_size: 16, learning_rate: 0.01}",
            split="{validation: 0.2, test: 0.2, seed: 7}",
            evaluate="{metric: accuracy, deploy_if_at_least: 0.8}",
        )
    )
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    evaluation = run.evaluation
    assert evaluation.subset == data_pb2.SUBSET_TEST and evaluation.rows == 30
    assert sum(evaluation.confusion_matrix) == 30 and len(evaluation.confusion_matrix) == 9
    assert sum(c.support for c in evaluation.classes) == 30
    assert {c.name for c in evaluation.classes} == {"setosa", "versicolor", "virginica"}
    assert {"accuracy", "loss", "macro_precision", "macro_recall", "macro_f1"} <= set(evaluation.metrics)
    # accuracy is the trace of the confusion matrix over the rows
    diagonal = sum(evaluation.confusion_matrix[i * 3 + i] for i in range(3))
    assert evaluation.metrics["accuracy"] == pytest.approx(diagonal / 30)
    assert run.deployed and run.deploy_decision.startswith("deployed: test accuracy")
    stages = [e.stage.stage for e in events if e.WhichOneof("event") == "stage"]
    assert gateway_pb2.STAGE_SERVE in stages
    meta = json.loads(store.get_bytes(f"models/gated/{run.model.version}/cookline.json"))
    assert meta["evaluation"]["rows"] == "30" or meta["evaluation"]["rows"] == 30
    assert meta["evaluation"]["metrics"]["accuracy"] == pytest.approx(evaluation.metrics["accuracy"])


def test_a_model_that_misses_the_gate_is_registered_but_not_deployed(client, store):
    run, events = client.run_and_wait(
        pipeline(
            "undertrained",
            "{model: mlp, epochs: 1, batch_size: 64, learning_rate: 0.00001}",
            evaluate="{metric: macro_f1, deploy_if_at_least: 0.99}",
        )
    )
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    assert not run.deployed
    assert run.deploy_decision.startswith("not deployed: validation macro_f1") and "< 0.99" in run.deploy_decision
    assert store.exists(f"models/undertrained/{run.model.version}/cookline.json")  # still registered
    stages = [e.stage.stage for e in events if e.WhichOneof("event") == "stage"]
    assert gateway_pb2.STAGE_SERVE not in stages


@pytest.mark.parametrize(
    "evaluate, field",
    [
        ("{metric: loss, deploy_if_at_least: 0.5}", "evaluate.metric"),
        ("{metric: accuracy, deploy_if_at_least: 1.5}", "evaluate.deploy_if_at_least"),
    ],
)
def test_bad_gates_are_rejected_at_submit(client, evaluate, field):
    with pytest.raises(grpc.RpcError) as info:
        client.submit(pipeline("badgate", "{model: mlp}", evaluate=evaluate))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in info.value.details()


def test_progress_is_streamed_within_epochs(client):
    run, events = client.run_and_wait(
        pipeline("chatty", "{model: mlp, epochs: 2, batch_size: 8, progress_every_batches: 5}")
    )
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    progress = [e.train for e in events if e.WhichOneof("event") == "train"]
    mid = [p for p in progress if not p.epoch_finished]
    assert [(p.epoch, p.batch) for p in mid] == [(e, b) for e in (1, 2) for b in (5, 10, 15)]  # 120 rows / 8
    assert all(p.samples_per_second > 0 and "loss" in p.metrics for p in mid)
    assert [p.epoch for p in progress if p.epoch_finished] == [1, 2]


def test_cancel_stops_a_run_and_publishes_nothing(client, store):
    run = client.submit(pipeline("cancelled", "{model: mlp, epochs: 10000, batch_size: 1, progress_every_batches: 10}"))
    events = []
    for event in client.watch(run.run_id):
        events.append(event)
        if event.WhichOneof("event") == "train" and len(events) < 1000:
            client.cancel(run.run_id)
            break
    rest = list(client.watch(run.run_id, from_sequence=events[-1].sequence + 1))
    final = client.get_run(run.run_id)
    assert final.state == gateway_pb2.RUN_STATE_CANCELLED and final.reason == "cancelled during train"
    assert rest[-1].finished.state == gateway_pb2.RUN_STATE_CANCELLED
    assert not any(k.endswith("cookline.json") for k in store.list("models/cancelled/"))
    # cancelling again changes nothing; an unknown run is NOT_FOUND
    assert client.cancel(run.run_id).state == gateway_pb2.RUN_STATE_CANCELLED
    with pytest.raises(grpc.RpcError) as info:
        client.cancel("20990101-000000-000000")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_linear_model_learns_iris(client):
    run, _ = client.run_and_wait(
        pipeline("irislinear", "{model: linear, epochs: 100, batch_size: 16, learning_rate: 0.05}")
    )
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    assert run.evaluation.metrics["accuracy"] >= 0.85


def test_a_loss_that_becomes_nan_or_inf_fails_the_run_with_the_reason(client, tmp_path, store):
    # 64 columns at +-3.4e38, float32's edge: the first layer's sums overflow both ways and
    # meet as inf - inf, so the very first loss is NaN whatever the initial weights.
    header = ",".join(f"c{j}" for j in range(64)) + ",label"
    rows = "\n".join(",".join(["3.4e38", "-3.4e38"] * 32) + ("," + ("a" if i % 2 else "b")) for i in range(32))
    (tmp_path / "huge.csv").write_text(header + "\n" + rows + "\n")
    run, _ = client.run_and_wait(
        f"name: diverges\ncollect: {{source: {tmp_path / 'huge.csv'}, label: label}}\n"
        "train: {model: mlp, hidden_units: [32], epochs: 3, batch_size: 8}\n"
    )
    assert run.state == gateway_pb2.RUN_STATE_FAILED, run.deploy_decision
    assert "train failed: INVALID_ARGUMENT" in run.reason and "diverged: loss became" in run.reason
    assert "nan" in run.reason or "inf" in run.reason
    assert not any(k.endswith("cookline.json") for k in store.list("models/diverges/"))


def test_linear_with_hidden_units_is_rejected(client):
    with pytest.raises(grpc.RpcError) as info:
        client.submit(pipeline("bad", "{model: linear, hidden_units: [4]}"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "train.hidden_units" in info.value.details()


def test_report_is_one_html_page_with_embedded_plots(client, env, tmp_path):
    import base64
    import re
    import subprocess
    import sys

    run, _ = client.run_and_wait(
        pipeline(
            "reported",
            "{model: mlp, hidden_units: [8], epochs: 5, batch_size: 16, learning_rate: 0.02}",
            split="{validation: 0.2, test: 0.2, seed: 2}",
        )
    )
    page = report_page(run.run_id, env, tmp_path / "report.html")
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2  # curves and confusion matrix, nothing linked from outside
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    for text in (run.run_id, "confusion matrix", "setosa", "versicolor", "virginica", "macro_f1"):
        assert text in page
    assert 'src="http' not in page and "<script" not in page
    done = subprocess.run(
        [sys.executable, "-m", "cookline.cli", "report", "20990101-000000-000000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "NOT_FOUND" in done.stderr


def test_exported_savedmodel_matches_serve(client, env, store, tmp_path):
    """The stored SavedModel (loaded with tf.saved_model.load) gives serve's outputs for the same raw rows
    (the TF.js export: tests/test_e2e_tfjs.py)."""
    import csv

    import numpy as np
    import tensorflow as tf

    run, _ = client.run_and_wait(
        pipeline("exported", "{model: mlp, hidden_units: [12, 8], epochs: 30, batch_size: 16, learning_rate: 0.01}")
    )
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    prefix = f"models/exported/{run.model.version}/"
    local = tmp_path / "model"
    for key in store.list(prefix):
        store.get_file(key, str(local / key[len(prefix) :]))
    assert json.loads((local / "cookline.json").read_text())["formats"] == ["saved_model"]
    with open(IRIS_CSV) as f:
        rows = [[float(v) for v in r[:4]] for r in list(csv.reader(f))[1::7]]

    served = np.array(
        [[r["scores"][c] for c in ("setosa", "versicolor", "virginica")] for r in client.predict("exported", rows)]
    )
    order = json.loads((local / "cookline.json").read_text())["class_names"]
    served = served[:, [("setosa", "versicolor", "virginica").index(c) for c in order]]

    loaded = tf.saved_model.load(str(local))
    saved = loaded.signatures["serving_default"](features=tf.constant(rows, tf.float32))["scores"].numpy()
    np.testing.assert_allclose(saved, served, atol=1e-6)


def test_the_same_pipeline_on_the_same_data_gives_equal_metrics_twice(client):
    # no shuffle op: the rows are shuffled by default, seeded by train.seed, as is the weight init
    text = (
        f"name: repeatable\ncollect: {{source: {IRIS_CSV}, label: species}}\n"
        f"process: [{{standardize: {{}}}}]\nsplit: {{validation: 0.2, seed: 7}}\n"
        f"train: {{model: mlp, hidden_units: [8], epochs: 5, batch_size: 16, learning_rate: 0.01, seed: 11}}\n"
    )
    first, _ = client.run_and_wait(text)
    second, _ = client.run_and_wait(text)
    assert first.state == second.state == gateway_pb2.RUN_STATE_SUCCEEDED, (first.reason, second.reason)
    assert second.model.version == first.model.version + 1
    assert dict(first.metrics) == dict(second.metrics) and dict(first.evaluation.metrics) == dict(
        second.evaluation.metrics
    )
    other, _ = client.run_and_wait(text.replace("seed: 11}", "seed: 12}"))
    assert dict(other.metrics) != dict(first.metrics)  # the seed is what made them equal


def shapes_folder(root) -> str:
    """Two classes of 16x16 grayscale PNGs, squares and rings, 40 each: a folder ordered by class."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(5)
    for label in ("ring", "square"):
        os.makedirs(os.path.join(root, label))
        for i in range(40):
            image = Image.new("L", (16, 16), 0)
            draw = ImageDraw.Draw(image)
            x, y, r = int(rng.integers(5, 11)), int(rng.integers(5, 11)), int(rng.integers(3, 5))
            if label == "ring":
                draw.ellipse((x - r, y - r, x + r, y + r), outline=255, width=1)
            else:
                draw.rectangle((x - r, y - r, x + r, y + r), fill=255)
            image.save(os.path.join(root, label, f"{i:03d}.png"))
    return str(root)


def test_a_class_ordered_image_folder_trains_as_well_without_a_shuffle_op(client, tmp_path):
    source = shapes_folder(tmp_path / "shapes")
    text = (
        f"name: {{name}}\ncollect: {{{{source: {source}, format: image-folder}}}}\nprocess: [{{process}}]\n"
        f"split: {{{{validation: 0.25, seed: 7}}}}\n"
        f"train: {{{{model: cnn, conv_filters: [8], hidden_units: [16], epochs: 8, batch_size: 8, "
        f"learning_rate: 0.01}}}}\n"
    )
    default, _ = client.run_and_wait(text.format(name="shapes-default", process=""))
    shuffled, _ = client.run_and_wait(text.format(name="shapes-shuffled", process="{shuffle: {buffer: 1000, seed: 3}}"))
    assert default.state == shuffled.state == gateway_pb2.RUN_STATE_SUCCEEDED, (default.reason, shuffled.reason)
    accuracy = default.evaluation.metrics["accuracy"], shuffled.evaluation.metrics["accuracy"]
    assert accuracy[1] >= 0.9 and accuracy[0] >= accuracy[1] - 0.05, accuracy
