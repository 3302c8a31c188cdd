"""The pipeline file: YAML parsed straight into cookline.v1.PipelineSpec.

The proto is the schema, so an unknown key is reported with its path, and the
file reference (docs/pipeline.md) and the proto comments describe the same thing.
"""
from __future__ import annotations

import os
import re

import yaml
from google.protobuf import json_format

from cookline.v1 import pipeline_pb2
from services.common import layout, splits
from services.common.errors import invalid
from services.collect.sources import FORMATS
from services.collect.sources.csv import MISSING_POLICIES
from services.process import ops
from services.train import spec as train_spec

_UNKNOWN = re.compile(r'Message type "cookline\.v1\.(\w+)" has no field named "([^"]+)" at "([^"]*)"')


def _where(path: str) -> str:
    """'PipelineSpec.train' -> 'train' (the file's own spelling of a field path)."""
    return path.split(".", 1)[1] if "." in path else ""


def parse(text: str, base_dir: str = "") -> pipeline_pb2.PipelineSpec:
    """Parses and validates a pipeline file; INVALID_ARGUMENT names the offending field.

    A relative collect.source resolves against base_dir, then the working directory.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:  # one line, with where in the file it went wrong
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        context = ""
        if exc.context and exc.context_mark and exc.problem_mark:
            context = f" ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        raise invalid(f"pipeline: not valid YAML{where}: {exc.problem or exc.context}{context}") from None
    except yaml.YAMLError as exc:
        raise invalid(f"pipeline: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise invalid("pipeline: expected a mapping with name, collect, process, split and train")
    _balanced_class_weights(data)
    spec = pipeline_pb2.PipelineSpec()
    try:
        json_format.ParseDict(data, spec)
    except json_format.ParseError as exc:
        message = str(exc)
        match = _UNKNOWN.search(message)
        if match:
            where = _where(match.group(3))
            field = f"{where}.{match.group(2)}" if where else match.group(2)
            raise invalid(f"pipeline: unknown field {field!r}") from None
        raise invalid(f"pipeline: {message}") from None

    layout.check_name("name", spec.name)
    if not spec.HasField("collect") or not spec.collect.source:
        raise invalid("pipeline: collect.source is required")
    if (spec.collect.format or "csv") not in FORMATS:
        raise invalid(f"pipeline: collect.format: {spec.collect.format!r} is not supported "
                      f"(supported: {', '.join(FORMATS)})")
    if spec.collect.missing and spec.collect.missing not in MISSING_POLICIES:
        raise invalid(f"pipeline: collect.missing: {spec.collect.missing!r} is not one of "
                      f"{', '.join(MISSING_POLICIES)}")
    if spec.collect.numeric_label and (spec.collect.format or "csv") != "csv":
        raise invalid(f"pipeline: collect.numeric_label: only for csv sources, not {spec.collect.format!r}")
    if (spec.collect.format or "csv") == "csv" and not spec.collect.label:
        raise invalid("pipeline: collect.label is required for csv sources")
    if not spec.HasField("train"):
        raise invalid("pipeline: train is required (at least train.model)")
    ops.validate(spec.process)
    spec.train.CopyFrom(train_spec.resolve(spec.train))
    train_spec.check_export(spec)
    splits.check(spec.split)
    spec.collect.source = resolve_source(spec.collect.source, base_dir)
    return spec


def _balanced_class_weights(data: dict) -> None:
    """`train.class_weights: balanced` is the file's spelling of `train.balance_classes: true`."""
    train = data.get("train")
    weights = train.get("class_weights") if isinstance(train, dict) else None
    if weights == "balanced":
        data["train"] = {k: v for k, v in train.items() if k != "class_weights"} | {"balance_classes": True}
    elif weights is not None and not isinstance(weights, dict):
        raise invalid(f"pipeline: train.class_weights: {weights!r} is neither balanced nor a mapping "
                      "{class name: weight}")


def resolve_source(source: str, base_dir: str) -> str:
    """Absolute path of a source: as given, else under base_dir, else under the working directory."""
    if "://" in source or os.path.isabs(source):
        return source
    candidates = [os.path.join(base_dir, source)] if base_dir else []
    candidates.append(os.path.abspath(source))
    for candidate in candidates:
        if os.path.exists(candidate):
            return os.path.abspath(candidate)
    return os.path.abspath(candidates[0])  # collect reports it as NOT_FOUND
