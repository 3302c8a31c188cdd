"""The spec package (cookline.spec): declarative rules, offline checks, the validate command.
No server process is started here."""

import json
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest

from cookline import cli, spec
from cookline.spec import ops as spec_ops
from cookline.spec import sources, train
from cookline.spec.params import Component, Param, Registry
from cookline.v1 import pipeline_pb2 as pb
from helpers import ROOT
from services.common.errors import status_of
from services.common.moments import merge

MINIMAL = "name: t\ncollect: {source: x.csv, label: y}\ntrain: {model: mlp}\n"


def error_of(call, *args) -> spec.SpecError:
    with pytest.raises(spec.SpecError) as info:
        call(*args)
    return info.value


def test_the_package_imports_no_service_gateway_tensorflow_or_grpc_server():
    for module, banned in (
        ("cookline.spec", "'services', 'gateway', 'tensorflow', 'keras', 'grpc'"),
        ("cookline.cli", "'services', 'gateway', 'tensorflow', 'keras'"),
    ):
        code = f"import sys, {module}; print([m for m in sys.modules if m.split('.')[0] in ({banned})])"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "[]", module


def test_param_defaults_ranges_choices_and_types():
    height = Param("height", "int", required=True, lo=1, hi=4096)
    assert height.resolve(7, "x.height") == 7
    assert str(error_of(height.resolve, 0, "x.height")) == "x.height: 0 is not in [1, 4096]"
    assert error_of(height.resolve, 0, "x.height").field == "x.height"
    assert "is not an int" in str(error_of(height.resolve, "tall", "x.height"))
    assert str(error_of(height.resolve, 2.5, "x.height")) == "x.height: 2.5 is not an int"
    assert height.resolve(3.0, "x.height") == 3
    rate = Param("rate", "float", default=0.001, lo=0, hi=10, lo_open=True)
    assert rate.resolve(0.0, "r") == 0.001  # unset -> default
    assert str(error_of(rate.resolve, -1.0, "r")) == "r: -1.0 is not in (0, 10]"
    assert "is not in (0, 10]" in str(error_of(rate.resolve, float("nan"), "r"))
    mode = Param("mode", "str", default="a", choices=("a", "b"))
    assert mode.resolve("", "m") == "a"
    assert str(error_of(mode.resolve, "c", "m")) == "m: 'c' is not one of a, b"
    say = Param("mode", "str", choices=("a", "b"), choices_say="supported")
    assert str(error_of(say.resolve, "c", "m")) == "m: 'c' is not supported (supported: a, b)"
    units = Param("units", "ints", default=(8,), lo=1, hi=8)
    assert units.resolve([], "u") == (8,)
    assert str(error_of(units.resolve, [4, 9], "u")) == "u[1]: 9 is not in [1, 8]"
    weights = Param("w", "map", lo=0, hi=1e6, lo_open=True)
    assert str(error_of(weights.resolve, {"a": -1.0}, "w")) == "w['a']: -1.0 is not in (0, 1000000]"
    assert Param("label", "str", required=True).describe() == {"name": "label", "type": "str", "required": True}
    with pytest.raises(ValueError):
        Param("x", "complex")


def test_a_component_checks_unknown_keys_and_fills_defaults():
    clip = Component("clip", "op", (Param("lo", "float", default=0.0), Param("hi", "float", default=1.0, lo=0)))
    assert clip.resolve({"hi": 2.0}, "process[0].clip") == {"lo": 0.0, "hi": 2.0}
    err = error_of(clip.resolve, {"high": 2.0}, "process[0].clip")
    assert err.field == "process[0].clip.high" and "unknown field 'high'" in str(err)
    registry = Registry("op", "process")
    registry.register(clip)
    with pytest.raises(ValueError):
        registry.register(clip)
    message = str(error_of(registry.get, "clamp"))
    assert message.startswith("process: 'clamp' is not supported (supported: clip); a plugin")


def test_every_builtin_is_declared():
    described = spec.describe()
    assert [s["name"] for s in described["sources"]] == ["csv", "text-csv", "image-folder", "voc", "coco", "npz"]
    assert [o["name"] for o in described["ops"]] == [
        "standardize",
        "min_max",
        "fill_missing",
        "one_hot",
        "lookup",
        "resize",
        "grayscale",
        "random_flip",
        "random_rotation",
        "random_brightness",
        "box_augment",
        "vectorize_text",
        "shuffle",
    ]
    assert [m["name"] for m in described["models"]] == ["mlp", "linear", "cnn", "mobilenet_v2", "detector", "text"]
    json.dumps(described)  # JSON-able, for docs and listings
    # every op message field is a declared parameter, and the reverse
    for component in spec.OPS:
        message = getattr(pb.Op(), component.name)
        assert sorted(f.name for f in message.DESCRIPTOR.fields) == sorted(p.name for p in component.params)
    # every family / train / early-stopping parameter is a TrainSpec field
    fields = {f.name for f in pb.TrainSpec.DESCRIPTOR.fields} | {f.name for f in pb.EarlyStopping.DESCRIPTOR.fields}
    declared = {p.name for m in spec.MODELS for p in m.params}
    declared |= {p.name for p in train.TRAIN_PARAMS + train.EARLY_STOPPING}
    assert declared <= fields
    collect_fields = {f.name for f in pb.CollectSpec.DESCRIPTOR.fields}
    assert {p.name for s in spec.SOURCES for p in s.params} <= collect_fields
    assert spec_ops.deterministic("standardize") and not spec_ops.deterministic("shuffle")
    assert not spec_ops.deterministic("random_flip")
    assert sources.FORMATS == ("csv", "text-csv", "image-folder", "voc", "coco", "npz")
    assert train.MODELS == ("mlp", "linear", "cnn", "mobilenet_v2", "detector", "text")
    assert train.IMAGE_MODELS == ("cnn", "mobilenet_v2")
    assert train.TFJS_MODELS == ("mlp", "linear", "cnn", "mobilenet_v2", "text")
    assert train.REGRESSION_MODELS == ("mlp", "linear") and train.MIN_INPUT_SIZE == 32


def test_op_settings_have_their_defaults():
    assert spec_ops.resolve(pb.Op(shuffle=pb.ShuffleOp())) == {"buffer": 1000, "seed": 0}
    assert spec_ops.resolve(pb.Op(vectorize_text=pb.VectorizeTextOp(mode="int"))) == {
        "max_tokens": 10_000,
        "mode": "int",
        "sequence_length": 64,
    }
    err = error_of(spec_ops.validate, [pb.Op(standardize=pb.StandardizeOp()), pb.Op(resize=pb.ResizeOp(width=3))])
    assert str(err) == "process[1].resize.height: 0 is not in [1, 4096]"
    assert err.field == "process[1].resize.height"


def test_validate_checks_a_message_as_parse_checks_a_file():
    message = pb.PipelineSpec(
        name="t", collect=pb.CollectSpec(source="/x.csv", label="y"), train=pb.TrainSpec(model="cnn")
    )
    resolved = spec.validate(message)
    assert list(resolved.train.conv_filters) == [16, 32] and resolved.train.epochs == 10
    assert resolved.collect.source == "/x.csv"  # a message's source is left as given
    message.evaluate.deploy_if_at_least = 0.9
    message.evaluate.metric = "auc"
    err = error_of(spec.validate, message)
    assert err.field == "evaluate.metric" and "'auc' is not one of accuracy" in str(err)
    message.evaluate.metric = ""
    message.evaluate.deploy_if_at_least = 1.5
    assert "evaluate.deploy_if_at_least: 1.5 is not in (0, 1]" in str(error_of(spec.validate, message))


@pytest.mark.parametrize(
    "collect, message",
    [
        (pb.CollectSpec(source="d", format="image-folder", color="sepia"), "collect.color: 'sepia' is not one of"),
        (pb.CollectSpec(source="d", format="voc", image_size=[8]), "collect.image_size: [8] is not [height, width]"),
        (pb.CollectSpec(source="d", format="npz", numeric_label=True), "collect.numeric_label: only for csv sources"),
        (pb.CollectSpec(source="d.csv", label="y", missing="skip"), "collect.missing: 'skip' is not one of error"),
        (pb.CollectSpec(source="d", format="parquet"), "collect.format: 'parquet' is not supported"),
    ],
)
def test_collect_rules(collect, message):
    assert message in str(error_of(sources.check, collect))


def test_names_follow_one_rule():
    assert spec.check_name("model.name", "iris-2.v1") == "iris-2.v1"
    assert "model.name: 'a/b' is not a valid name" in str(error_of(spec.check_name, "model.name", "a/b"))
    assert "alias is required" in str(error_of(spec.check_name, "alias", ""))


def test_the_rpc_layer_maps_a_spec_error_to_invalid_argument():
    assert status_of(spec.SpecError("train.epochs: 0 is not in [1, 10000]")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "train.epochs: 0 is not in [1, 10000]",
    )


def test_one_chan_merge_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(101, 3))
    count, mean, m2 = 0, 0.0, 0.0
    for chunk in np.array_split(x, 7):
        c_mean = chunk.mean(axis=0)
        count, mean, m2 = merge((count, mean, m2), (len(chunk), c_mean, ((chunk - c_mean) ** 2).sum(axis=0)))
    np.testing.assert_allclose(mean, x.mean(axis=0))
    np.testing.assert_allclose(m2 / count, x.var(axis=0))


def test_cookline_validate_offline(tmp_path, capsys):
    assert cli.main(["validate", os.path.join(ROOT, "examples", "iris.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("iris: valid\n") and "mlp, 60 epochs, batch 16" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL + "process: [{resize: {height: 0, width: 4}}]\n")
    assert cli.main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {bad}: process[0].resize.height: 0 is not in [1, 4096]"
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    assert cli.main(["validate", str(good), "--output", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["train"]["hidden_units"] == ["32"] and printed["collect"]["source"] == str(tmp_path / "x.csv")
    assert cli.main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_every_example_validates():
    for name in sorted(os.listdir(os.path.join(ROOT, "examples"))):
        if name.endswith(".yaml"):
            assert cli.main(["validate", os.path.join(ROOT, "examples", name)]) == 0, name


PLUGIN_CHECKS = r"""
import sys
from importlib import metadata
sys.path.insert(0, sys.argv[1])
from cookline import spec
from cookline.spec import plugins
from cookline.v1 import pipeline_pb2 as pb

def ep(name, value, group):
    return plugins._register(group, plugins.GROUPS[group], metadata.EntryPoint(name, value, group))

assert ep("jsonl", "cookline_example_plugins:JSONL", "cookline.sources").error == ""
assert ep("clip", "cookline_example_plugins:CLIP", "cookline.ops").params == ("lo", "hi")
assert ep("residual_mlp", "cookline_example_plugins:RESIDUAL_MLP", "cookline.models").error == ""
assert "is a op, but cookline.sources holds sources" in ep("clip", "cookline_example_plugins:CLIP",
                                                         "cookline.sources").error
assert "named 'clamp' but the component 'clip'" in ep("clamp", "cookline_example_plugins:CLIP", "cookline.ops").error
assert "already registered" in ep("clip", "cookline_example_plugins:CLIP", "cookline.ops").error
assert ep("nope", "no_such_module:X", "cookline.ops").error.startswith("ModuleNotFoundError")
assert spec.OPS.get("clip").plugin and "clip" in spec.OPS.names()

text = open(sys.argv[2]).read()
p = spec.parse(text, sys.argv[1])
assert p.process[1].WhichOneof("kind") == "plugin" and p.process[1].plugin.name == "clip"
assert dict(p.process[1].plugin.params) == {"lo": -2.5, "hi": 2.5}
assert dict(p.train.params) == {"width": 16.0, "blocks": 2.0, "dropout": 0.0}
assert p.collect.format == "jsonl" and p.collect.label == "species"
assert plugins.used_by(p) == [("source", "jsonl", ("collect",)), ("op", "clip", ("process", "train")),
                              ("model", "residual_mlp", ("train",))]

def error(text=None, message=None):
    try:
        spec.parse(text, sys.argv[1]) if message is None else spec.validate(message)
    except spec.SpecError as exc:
        return str(exc)
    raise AssertionError("no error")

assert error(text.replace("hi: 2.5", "high: 2.5")) == "process[1].clip: unknown field 'high' (fields: hi, lo)"
assert error(text.replace("hi: 2.5", "hi: -3")) == "process[1].clip.hi: -3.0 is not above lo (-2.5)"
assert error(text.replace("blocks: 2", "blocks: 0")) == "train.blocks: 0 is not in [1, 16]"
assert "unknown field 'train.depth'" in error(text.replace("blocks: 2", "depth: 2"))
assert error(text.replace("clip: {lo: -2.5, hi: 2.5}", "plugin: {name: standardize}")) == \
    "process[1].plugin.name: 'standardize' is a built-in op; write it as `- standardize: ...`"
message = pb.PipelineSpec(name="t", collect=pb.CollectSpec(source="x.csv", label="y"), train=pb.TrainSpec(model="mlp"))
message.train.params.update({"width": 3})
assert error(message=message) == "train.params: only for plugin model families, not 'mlp'"
message.train.ClearField("params")
message.collect.params.update({"x": 1})
assert error(message=message) == "collect.params: only for plugin sources, not 'csv'"
print("ok")
"""


def test_plugins_register_validate_like_builtins_and_report_what_fails():
    """In a fresh interpreter (plugins join process-wide registries): the example package's
    declarations, registered from entry points, check a pipeline like built-ins do."""
    package = os.path.join(ROOT, "examples", "plugins")
    done = subprocess.run(
        [sys.executable, "-c", PLUGIN_CHECKS, package, os.path.join(package, "iris-jsonl.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize(
    "value, ok",
    [
        ("iris", ("iris", "")),
        ("iris@3f2a09", ("iris", "3f2a09")),
        ("Iris", None),
        ("iris@", None),
        ("iris@xyz", None),
        ("../x", None),
    ],
)
def test_collect_dataset_is_name_at_optional_version(value, ok):
    if ok:
        assert spec.dataset_ref(value) == ok
        pipeline = spec.parse(f"name: t\ncollect: {{dataset: '{value}'}}\ntrain: {{model: mlp}}\n")
        assert pipeline.collect.dataset == value and not pipeline.collect.source
    else:
        err = error_of(spec.parse, f"name: t\ncollect: {{dataset: '{value}'}}\ntrain: {{model: mlp}}\n")
        assert err.field == "collect.dataset" and status_of(err)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_collect_dataset_stands_alone():
    err = error_of(
        spec.validate,
        pb.PipelineSpec(
            name="t", collect=pb.CollectSpec(dataset="iris", source="x.csv"), train=pb.TrainSpec(model="mlp")
        ),
    )
    assert err.field == "collect.source" and "not allowed with collect.dataset" in err.message


def test_source_errors_carry_their_own_status():
    assert status_of(spec.SourceDenied("collect.source: x", "collect.source"))[0] == grpc.StatusCode.PERMISSION_DENIED
    assert status_of(spec.SourceNotFound("collect.source: x", "collect.source"))[0] == grpc.StatusCode.NOT_FOUND
