"""Pipeline-file parsing: the example as written, defaults, paths, and precise errors."""

import os

import grpc
import pytest

from cookline.spec import SpecError
from cookline.spec import pipeline as pipeline_file
from helpers import ROOT
from services.common.errors import status_of

IRIS = os.path.join(ROOT, "examples", "iris.yaml")
MINIMAL = "name: t\ncollect: {source: x.csv, label: y}\ntrain: {model: mlp}\n"


def parse_error(text: str, base_dir: str = "") -> str:
    with pytest.raises(SpecError) as info:
        pipeline_file.parse(text, base_dir)
    code, message = status_of(info.value)  # the RPC layer's mapping
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    return message


def test_iris_example_parses_as_written(monkeypatch):
    monkeypatch.chdir(ROOT)
    with open(IRIS) as f:
        spec = pipeline_file.parse(f.read(), os.path.dirname(IRIS))
    assert spec.name == "iris"
    assert spec.collect.source == os.path.join(ROOT, "examples", "data", "iris.csv")
    assert spec.collect.label == "species"
    assert [op.WhichOneof("kind") for op in spec.process] == ["standardize", "shuffle"]
    assert spec.process[1].shuffle.buffer == 1000 and spec.process[1].shuffle.seed == 7
    assert spec.split.validation == pytest.approx(0.2) and spec.split.seed == 7
    assert (spec.train.model, list(spec.train.hidden_units), spec.train.epochs, spec.train.batch_size) == (
        "mlp",
        [16],
        60,
        16,
    )
    assert spec.train.learning_rate == pytest.approx(0.01)


def test_defaults_are_filled_in(tmp_path):
    spec = pipeline_file.parse(MINIMAL, str(tmp_path))
    assert (spec.train.epochs, spec.train.batch_size, list(spec.train.hidden_units)) == (10, 32, [32])
    assert spec.train.learning_rate == pytest.approx(0.001)


def test_relative_source_prefers_the_pipeline_folder_then_the_working_directory(tmp_path, monkeypatch):
    here, cwd = tmp_path / "pipelines", tmp_path / "cwd"
    here.mkdir(), cwd.mkdir()
    (cwd / "x.csv").write_text("a,y\n1,b\n")
    monkeypatch.chdir(cwd)
    assert pipeline_file.parse(MINIMAL, str(here)).collect.source == str(cwd / "x.csv")
    (here / "x.csv").write_text("a,y\n1,b\n")
    assert pipeline_file.parse(MINIMAL, str(here)).collect.source == str(here / "x.csv")


@pytest.mark.parametrize(
    "text, field",
    [
        (MINIMAL + "colour: blue\n", "'colour'"),
        (MINIMAL.replace("model: mlp", "model: mlp, hiden_units: [3]"), "'train.hiden_units'"),
        (MINIMAL.replace("label: y", "label: y, sourse: z"), "'collect.sourse'"),
        (MINIMAL + "process: [{standardise: {}}]\n", "'process[0].standardise'"),
    ],
)
def test_unknown_fields_are_named(text, field):
    message = parse_error(text)
    assert "unknown field" in message and field in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: t\ncollect: {label: y}\ntrain: {model: mlp}\n", "collect.source is required"),
        ("name: t\ntrain: {model: mlp}\n", "collect.source is required"),
        ("name: t\ncollect: {source: x.csv}\ntrain: {model: mlp}\n", "collect.label is required"),
        ("name: t\ncollect: {source: x.csv, label: y}\n", "train is required"),
        ("collect: {source: x.csv, label: y}\ntrain: {model: mlp}\n", "name is required (lowercase letters"),
        (MINIMAL.replace("name: t", "name: ../etc"), "name: '../etc' is not a valid name"),
        (MINIMAL.replace("name: t", "name: Iris"), "name: 'Iris' is not a valid name"),
        (MINIMAL.replace("model: mlp", "model: gpt"), "train.model: 'gpt' is not supported"),
        (MINIMAL.replace("model: mlp", "model: mlp, epochs: -3"), "train.epochs: -3"),
        (MINIMAL.replace("model: mlp", "model: mlp, learning_rate: 50"), "train.learning_rate: 50"),
        (MINIMAL + "split: {validation: 1.5}\n", "split.validation: 1.5"),
        (MINIMAL + "split: {validation: 0.5, test: 0.5}\n", "validation + test must leave"),
        (MINIMAL + "process: [{}]\n", "process[0]: no op given"),
        (MINIMAL + "process: [{resize: {height: 0, width: 4}}]\n", "process[0].resize.height: 0 is not in [1, 4096]"),
        (MINIMAL + "process: [{vectorize_text: {mode: bert}}]\n", "process[0].vectorize_text.mode: 'bert'"),
        (
            MINIMAL + "process: [{shuffle: {}}, {random_brightness: {max_delta: 2}}]\n",
            "process[1].random_brightness.max_delta: 2.0 is not in (0, 1]",
        ),
        (MINIMAL.replace("label: y", "label: y, format: xlsx"), "collect.format: 'xlsx' is not supported"),
        (MINIMAL.replace("label: y", "label: y, missing: ignore"), "collect.missing: 'ignore' is not one of"),
        ("- just\n- a list\n", "expected a mapping"),
        (
            MINIMAL.replace("label: y", "label: y, format: text-csv, numeric_label: true"),
            "collect.numeric_label: only for csv sources, not 'text-csv'",
        ),
        ("name: [unclosed\n", "not valid YAML"),
        (
            "name: t\ncollect: {source: x.csv, label: y\ntrain: {model: mlp}\n",
            "pipeline: not valid YAML at line 3, column 6: expected ',' or '}', but got ':' "
            "(while parsing a flow mapping at line 2, column 10)",
        ),
        (MINIMAL.replace("epochs", "x") + "train: {model: mlp, epochs: many}\n", "train"),
        (MINIMAL.replace("model: mlp", "model: mlp, optimizer: lbfgs"), "train.optimizer: 'lbfgs' is not supported"),
        (
            MINIMAL.replace("model: mlp", "model: mlp, early_stopping: {metric: loss, patience: 3}"),
            "train.early_stopping.metric: 'loss' is not supported",
        ),
        (
            MINIMAL.replace("model: mlp", "model: mlp, early_stopping: {metric: val_loss}"),
            "train.early_stopping.patience: 0 is not in [1, 10000]",
        ),
        (
            MINIMAL.replace("model: mlp", "model: mlp, class_weights: {a: -1}"),
            "train.class_weights['a']: -1.0 is not in (0, 1000000]",
        ),
        (
            MINIMAL.replace("model: mlp", "model: mlp, class_weights: {a: 2}, balance_classes: true"),
            "train.class_weights: give weights per class or balanced, not both",
        ),
        (
            MINIMAL.replace("model: mlp", "model: mlp, class_weights: heavy"),
            "train.class_weights: 'heavy' is neither balanced nor a mapping",
        ),
        (MINIMAL.replace("model: mlp", "model: linear, hidden_units: [4]"), "train.hidden_units: a linear model"),
        (
            MINIMAL.replace("model: mlp", "model: mobilenet_v2, hidden_units: [4]"),
            "train.hidden_units: a mobilenet_v2 model",
        ),
        (
            MINIMAL.replace("model: mlp", "model: mlp, conv_filters: [8]"),
            "train.conv_filters: applies to model cnn or detector, not 'mlp'",
        ),
        (MINIMAL.replace("model: mlp", "model: cnn, conv_filters: [8, 0]"), "train.conv_filters[1]: 0 is not in"),
        (
            MINIMAL.replace("model: mlp", "model: cnn, embedding_dim: 8"),
            "train.embedding_dim: applies to model text, not 'cnn'",
        ),
        (MINIMAL.replace("model: mlp", "model: text, embedding_dim: 5000"), "train.embedding_dim: 5000 is not in"),
        (MINIMAL.replace("model: mlp", "model: mobilenet_v2, alpha: 3"), "train.alpha: 3.0 is not in (0, 2]"),
        (
            MINIMAL.replace("model: mlp", "model: mobilenet_v2, input_size: 16"),
            "train.input_size: 16 is not in [32, 1024]",
        ),
        (
            MINIMAL.replace("model: mlp", "model: text, input_size: 64"),
            "train.input_size: applies to model mobilenet_v2, not 'text'",
        ),
    ],
)
def test_invalid_pipelines_name_the_field(text, expected):
    assert expected in parse_error(text)


def test_zoo_defaults_and_common_settings_are_filled_in():
    cnn = pipeline_file.parse(MINIMAL.replace("model: mlp", "model: cnn")).train
    assert (list(cnn.conv_filters), list(cnn.hidden_units), cnn.optimizer) == ([16, 32], [64], "adam")
    text = pipeline_file.parse(MINIMAL.replace("model: mlp", "model: text")).train
    assert (text.embedding_dim, list(text.hidden_units)) == (32, [])
    mobile = pipeline_file.parse(MINIMAL.replace("model: mlp", "model: mobilenet_v2")).train
    assert (mobile.alpha, mobile.input_size) == (1.0, 0)
    tuned = pipeline_file.parse(
        MINIMAL.replace(
            "model: mlp", "model: mlp, optimizer: sgd, class_weights: balanced, early_stopping: {patience: 2}"
        )
    ).train
    assert (tuned.optimizer, tuned.balance_classes, dict(tuned.class_weights)) == ("sgd", True, {})
    assert (tuned.early_stopping.metric, tuned.early_stopping.patience) == ("val_loss", 2)
    weighted = pipeline_file.parse(MINIMAL.replace("model: mlp", "model: mlp, class_weights: {a: 2.5}")).train
    assert dict(weighted.class_weights) == {"a": 2.5} and not weighted.balance_classes


def test_the_new_examples_parse_as_written():
    for name, fmt in (
        ("digits.yaml", "image-folder"),
        ("digits-cnn.yaml", "image-folder"),
        ("text.yaml", "text-csv"),
        ("digits-mobilenet.yaml", "image-folder"),
    ):
        with open(os.path.join(ROOT, "examples", name)) as f:
            spec = pipeline_file.parse(f.read(), os.path.join(ROOT, "examples"))
        assert spec.collect.format == fmt and os.path.exists(spec.collect.source)
    strict = pipeline_file.parse(MINIMAL + "strict: true\n")
    assert strict.strict
    csv = pipeline_file.parse(
        MINIMAL.replace("label: y", "label: y, no_header: true, columns: [a, y], categorical: [a], missing: keep")
    )
    assert csv.collect.no_header and list(csv.collect.categorical) == ["a"] and csv.collect.missing == "keep"
