"""The pipeline file: YAML parsed straight into cookline.v1.PipelineSpec.

The proto is the schema, so an unknown key is reported with its path, and the
README's file reference and the proto comments describe the same thing.
"""
from __future__ import annotations

import os
import re

import yaml
from google.protobuf import json_format

from cookline import config
from cookline.v1 import data_pb2, pipeline_pb2
from services.common import layout, roots, splits
from services.common.errors import invalid, not_found
from services.collect.sources import FORMATS
from services.collect.sources.csv import MISSING_POLICIES
from services.process import ops
from services.train import spec as train_spec

VERSION_RE = re.compile(r"[0-9a-f]{1,64}")
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
    return validate(spec, base_dir)


def validate(spec: pipeline_pb2.PipelineSpec, base_dir: str = "") -> pipeline_pb2.PipelineSpec:
    """Validates a pipeline (parsed from a file, or sent as a PipelineSpec message), fills in the
    defaults and resolves a local collect.source inside the source roots; errors name the field."""
    layout.check_name("name", spec.name)
    if spec.collect.dataset:
        _check_dataset_form(spec.collect)
    elif not spec.HasField("collect") or not spec.collect.source:
        raise invalid("pipeline: collect.source is required (or collect.dataset: NAME[@VERSION], "
                      "a dataset already in the store)")
    if (spec.collect.format or "csv") not in FORMATS:
        raise invalid(f"pipeline: collect.format: {spec.collect.format!r} is not supported "
                      f"(supported: {', '.join(FORMATS)})")
    if spec.collect.missing and spec.collect.missing not in MISSING_POLICIES:
        raise invalid(f"pipeline: collect.missing: {spec.collect.missing!r} is not one of "
                      f"{', '.join(MISSING_POLICIES)}")
    if spec.collect.numeric_label and (spec.collect.format or "csv") != "csv":
        raise invalid(f"pipeline: collect.numeric_label: only for csv sources, not {spec.collect.format!r}")
    if (spec.collect.format or "csv") == "csv" and not spec.collect.label and not spec.collect.dataset:
        raise invalid("pipeline: collect.label is required for csv sources")
    if not spec.HasField("train"):
        raise invalid("pipeline: train is required (at least train.model)")
    ops.validate(spec.process)
    spec.train.CopyFrom(train_spec.resolve(spec.train))
    train_spec.check_export(spec)
    splits.check(spec.split)
    if spec.collect.source:
        spec.collect.source = resolve_source(spec.collect.source, base_dir)
    return spec


def dataset_ref(value: str) -> data_pb2.DatasetRef:
    """collect.dataset's NAME[@VERSION] as a DatasetRef (an empty version means the newest)."""
    name, _, version = value.partition("@")
    if not layout.NAME_RE.fullmatch(name) or ".." in name:
        raise invalid(f"pipeline: collect.dataset: {value!r} is not NAME[@VERSION] (a name is 1 to 63 "
                      "lowercase letters, digits, '.', '_' or '-', starting with a letter or digit)")
    if "@" in value and not VERSION_RE.fullmatch(version):
        raise invalid(f"pipeline: collect.dataset: version {version!r} of {value!r} is not a dataset version "
                      "(hex digits)")
    return data_pb2.DatasetRef(name=name, version=version)


def _check_dataset_form(collect: pipeline_pb2.CollectSpec) -> None:
    """collect.dataset stands alone: a stored dataset has no source and is not re-read, so format
    options would be ignored; say so rather than ignore them."""
    dataset_ref(collect.dataset)
    for field, value in collect.ListFields():
        if field.name != "dataset":
            raise invalid(f"pipeline: collect.{field.name}: not allowed with collect.dataset (a stored dataset "
                          "is trained on as it is; set either collect.source with its options or collect.dataset)")


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
    """Absolute path of a local source, inside the source roots (COOKLINE_SOURCE_ROOTS).

    An absolute path is taken as it is; a relative one resolves against base_dir first (when
    that is inside the roots and the source exists there), then the working directory.
    PERMISSION_DENIED naming collect.source for a '..' component, a path outside the roots or a
    symlink leading out of them; NOT_FOUND when it exists nowhere. Nothing is opened.
    """
    if "://" in source:
        return source
    if roots.has_parent_step(source):
        roots.check(source)  # PERMISSION_DENIED
    allowed = config.source_roots()
    if os.path.isabs(source):
        candidates = [source]
    else:
        candidates = [os.path.join(base_dir, source)] if base_dir else []
        candidates.append(os.path.abspath(source))
    for candidate in candidates:
        if os.path.lexists(candidate):
            return roots.check(os.path.abspath(candidate), allowed)
    inside = [c for c in candidates if roots.inside(os.path.dirname(os.path.abspath(c)), allowed)]
    return roots.check(os.path.abspath((inside or candidates)[-1]), allowed)  # require_source: NOT_FOUND


def require_source(spec: pipeline_pb2.PipelineSpec) -> None:
    """NOT_FOUND naming collect.source when a local source does not exist on the services' machine, so
    SubmitRun answers at once (and a client on another machine knows to upload its data instead)."""
    source = spec.collect.source
    if source and "://" not in source and os.path.lexists(source):
        roots.check_tree(source)  # a symlink inside a source folder may lead out of the roots
    if source and "://" not in source and not os.path.lexists(source):
        raise not_found(f"collect.source: {source!r} not found on the services' machine; a client on another "
                        "machine uploads its data (cookline upload; cookline run does it by itself)")
