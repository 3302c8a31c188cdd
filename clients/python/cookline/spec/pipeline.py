"""The pipeline file: YAML parsed straight into cookline.v1.PipelineSpec, and the checks of a
whole PipelineSpec (name, collect, process, split, train, evaluate, export).

The proto is the schema, so an unknown key is reported with its path, and the
file reference (docs/pipeline.md) and the proto comments describe the same thing.
"""

from __future__ import annotations

import os
import re

import yaml
from google.protobuf import json_format

from cookline.spec import ops, plugins, sources, train
from cookline.spec import roots as source_roots
from cookline.spec.errors import SpecError
from cookline.spec.names import check_name
from cookline.spec.params import PLUGIN_HINT
from cookline.v1 import data_pb2, pipeline_pb2

_UNKNOWN = re.compile(r'Message type "cookline\.v1\.(\w+)" has no field named "([^"]+)" at "([^"]*)"')


def _where(path: str) -> str:
    """'PipelineSpec.train' -> 'train' (the file's own spelling of a field path)."""
    return path.split(".", 1)[1] if "." in path else ""


# Metrics the deploy gate can compare (all in [0, 1], higher is better; r2 for regressors; map50 and
# map, COCO's mAP@0.5 and mAP@[.5:.95], for detectors).
GATE_METRICS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "r2", "map50", "map")


def parse(text: str, base_dir: str = "", roots: list[str] | None = None) -> pipeline_pb2.PipelineSpec:
    """Parses and validates a pipeline file; SpecError names the offending field.

    A relative collect.source resolves against base_dir, then the working directory. With
    `roots` (the services pass COOKLINE_SOURCE_ROOTS) a local source must stay inside them
    (SourceDenied otherwise); without, as offline (`cookline validate`), it is only resolved.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:  # one line, with where in the file it went wrong
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        context = ""
        if exc.context and exc.context_mark and exc.problem_mark:
            context = f" ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        raise SpecError(f"pipeline: not valid YAML{where}: {exc.problem or exc.context}{context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"pipeline: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError("pipeline: expected a mapping with name, collect, process, split and train")
    _balanced_class_weights(data)
    _layer_counts(data)
    plugins.load()
    _plugin_spelling(data)
    spec = pipeline_pb2.PipelineSpec()
    try:
        json_format.ParseDict(data, spec)
    except json_format.ParseError as exc:
        message = str(exc)
        match = _UNKNOWN.search(message)
        if match:
            where = _where(match.group(3))
            field = f"{where}.{match.group(2)}" if where else match.group(2)
            hint = ""
            if re.fullmatch(r"process\[\d+\]\.[^.]+", field):  # an op's name: built-ins, or a plugin's
                hint = f" (ops: {', '.join(op.name for op in ops.OPS)}){PLUGIN_HINT}"
            raise SpecError(f"pipeline: unknown field {field!r}{hint}", field) from None
        raise SpecError(f"pipeline: {message}") from None

    validate(spec)
    if spec.collect.source:
        spec.collect.source = resolve_source(spec.collect.source, base_dir, roots)
    for field in train.local_paths(spec.train):
        setattr(spec.train, field, resolve_source(getattr(spec.train, field), base_dir, roots, f"train.{field}"))
    return spec


def validate(spec: pipeline_pb2.PipelineSpec) -> pipeline_pb2.PipelineSpec:
    """Checks a whole PipelineSpec and fills in train's defaults (in place; also returned).

    SpecError names the first offending field. collect.source is left as given.
    """
    plugins.load()
    check_name("name", spec.name)
    sources.check(spec.collect)
    if not spec.HasField("train"):
        raise SpecError("pipeline: train is required (at least train.model)", "train")
    ops.validate(spec.process)
    spec.train.CopyFrom(train.resolve(spec.train))
    train.check_export(spec)
    check_split(spec.split)
    check_evaluate(spec.evaluate)
    return spec


def check_split(split: data_pb2.SplitSpec) -> None:
    """SpecError naming split.<field> for fractions out of range."""
    for field in ("validation", "test"):
        value = getattr(split, field)
        if not 0.0 <= value < 1.0:
            raise SpecError(f"split.{field}: {value} is not in [0, 1)")
    if split.validation + split.test >= 1.0:
        raise SpecError("split: validation + test must leave some rows for training")


def check_evaluate(evaluate: pipeline_pb2.EvaluateSpec) -> None:
    """The deploy gate: a known metric and a threshold in (0, 1] (checked only when a threshold is set)."""
    if not evaluate.deploy_if_at_least:
        return
    metric = evaluate.metric or "accuracy"
    if metric not in GATE_METRICS:
        raise SpecError(
            f"pipeline: evaluate.metric: {metric!r} is not one of {', '.join(GATE_METRICS)}", "evaluate.metric"
        )
    if not 0 < evaluate.deploy_if_at_least <= 1:
        raise SpecError(
            f"pipeline: evaluate.deploy_if_at_least: {evaluate.deploy_if_at_least} is not in (0, 1]",
            "evaluate.deploy_if_at_least",
        )


def _balanced_class_weights(data: dict) -> None:
    """`train.class_weights: balanced` is the file's spelling of `train.balance_classes: true`."""
    train = data.get("train")
    weights = train.get("class_weights") if isinstance(train, dict) else None
    if weights == "balanced":
        assert isinstance(train, dict)  # weights came from it
        data["train"] = {k: v for k, v in train.items() if k != "class_weights"} | {"balance_classes": True}
    elif weights is not None and not isinstance(weights, dict):
        raise SpecError(
            f"pipeline: train.class_weights: {weights!r} is neither balanced nor a mapping {{class name: weight}}"
        )


def _layer_counts(data: dict) -> None:
    """`train.freeze: 3` and `train.fine_tune.unfreeze: 2` are numbers in a file, strings in the proto."""
    train = data.get("train")
    if not isinstance(train, dict):
        return
    for block, key in ((train, "freeze"), (train.get("fine_tune"), "unfreeze")):
        if isinstance(block, dict) and isinstance(block.get(key), int) and not isinstance(block[key], bool):
            block[key] = str(block[key])


def _plugin_spelling(data: dict) -> None:
    """Plugins are written like built-ins; this moves them where the proto keeps them.

    `- clip: {lo: 0}` in process becomes `- plugin: {name: clip, params: {lo: 0}}`; a plugin source's
    or model family's own parameters written in collect / train move to collect.params / train.params.
    """
    op_fields = set(pipeline_pb2.Op.DESCRIPTOR.fields_by_name)
    process = data.get("process")
    if isinstance(process, list):
        for i, op in enumerate(process):
            if isinstance(op, dict) and len(op) == 1:
                ((name, params),) = op.items()
                if name not in op_fields and name in ops.OPS and ops.OPS.get(name).plugin:
                    if params is not None and not isinstance(params, dict):
                        raise SpecError(f"process[{i}].{name}: {params!r} is not a mapping of parameters")
                    process[i] = {"plugin": {"name": name, "params": params or {}}}
    for section, registry, key, message in (
        ("collect", sources.SOURCES, "format", pipeline_pb2.CollectSpec),
        ("train", train.MODELS_REGISTRY, "model", pipeline_pb2.TrainSpec),
    ):
        block = data.get(section)
        if not isinstance(block, dict) or not isinstance(block.get(key), str) or block[key] not in registry:
            continue
        component = registry.get(block[key])
        own = {p.name for p in component.params} - set(message.DESCRIPTOR.fields_by_name)
        if component.plugin and own & set(block):
            given = block.get("params")
            params = given if isinstance(given, dict) else {}
            data[section] = {k: v for k, v in block.items() if k not in own} | {
                "params": params | {k: v for k, v in block.items() if k in own}
            }


def resolve_source(source: str, base_dir: str, roots: list[str] | None = None, field: str = "collect.source") -> str:
    """Absolute path of a source (or of another local path setting, `field`, such as train.base): as
    given, else under base_dir, else under the working directory; with `roots`, inside them
    (cookline.spec.roots.resolve)."""
    if roots is not None:
        return source_roots.resolve(source, base_dir, roots, field)
    if "://" in source or os.path.isabs(source):
        return source
    candidates = [os.path.join(base_dir, source)] if base_dir else []
    candidates.append(os.path.abspath(source))
    for candidate in candidates:
        if os.path.exists(candidate):
            return os.path.abspath(candidate)
    return os.path.abspath(candidates[0])  # collect reports it as NOT_FOUND
