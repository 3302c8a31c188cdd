"""The sources (collect.format): name, parameters (fields of collect), defaults and ranges.

The collect service implements them (services/collect/sources); this is what a pipeline may say.
A field of collect that no parameter of the chosen source names is ignored, except those
marked `only` below, which are an error elsewhere.
"""

from __future__ import annotations

import os
import re

from google.protobuf import json_format

from cookline.spec.errors import SpecError
from cookline.spec.names import NAME_RE, NAME_RULE
from cookline.spec.params import Component, Param, Registry

SOURCES = Registry("source", "collect.format")
DEFAULT_FORMAT = "csv"
# What an empty csv cell does (collect.missing).
MISSING_POLICIES = ("error", "drop", "fill", "keep")
# Cell texts that mean "no value" (compared lowercased, stripped).
MISSING_TEXTS = frozenset({"", "na", "n/a", "nan", "null", "none"})
COLORS = ("grayscale", "rgb")
# The kinds of a csv feature column (collect.column_kinds), and the rule that infers one: numeric
# when every present value is a number; else text when a value is longer than CATEGORY_MAX_CHARS
# characters or has more than CATEGORY_MAX_WORDS words; else category.
COLUMN_KINDS = ("numeric", "category", "text")
CATEGORY_MAX_CHARS = 40
CATEGORY_MAX_WORDS = 3
# Rows a column's kind is inferred from (the file's first ones).
INFER_ROWS = 4096
MAX_IMAGE_SIDE = 4096
# Fields of collect that are an error for a source without them (the others are ignored there).
ONLY = ("numeric_label",)


def _source(name: str, doc: str, *params: Param) -> Component:
    return SOURCES.register(Component(name, "source", params, doc))


_IMAGE_PARAMS = (
    Param("image_size", "ints", "[height, width] every image is resized to at ingest", lo=1, hi=MAX_IMAGE_SIDE),
    Param("color", "str", "grayscale (1 channel) or rgb (3); unset: the first image's mode", choices=COLORS),
)

_source(
    "csv",
    "rows of numeric, category and text columns plus one label column",
    Param("label", "str", "name of the label column", required=True),
    Param("no_header", "bool", "the file has no header row"),
    Param("columns", "strs", "column names of a file with no header"),
    Param("categorical", "strs", "columns holding category strings"),
    Param("column_kinds", "strmap", "kind of a column by name; a column not named is inferred", choices=COLUMN_KINDS),
    Param("missing", "str", "what an empty cell does", default="error", choices=MISSING_POLICIES),
    Param("fill_value", "float", "the value of an empty numeric cell (missing: fill)", default=0.0),
    Param("numeric_label", "bool", "the label is a number to predict (regression)"),
)
_source("text-csv", "pipcook's text format: text,category rows with no header")
_source(
    "image-folder",
    "one sub-folder of PNG/JPEG images per class, optionally under train/validation/test",
    *_IMAGE_PARAMS,
)
_source(
    "voc",
    "PascalVOC: annotations/*.xml + images/; every object's box and class (the label: the first object's)",
    *_IMAGE_PARAMS,
)
_source(
    "coco",
    "COCO JSON: one *.json file (images, annotations, categories) + images/; every box and class",
    *_IMAGE_PARAMS,
)
_source(
    "npz",
    "a numpy .npz archive of named arrays sharing their first dimension",
    Param("label", "str", "name of the label array", default="label"),
)


def __getattr__(name: str):
    """FORMATS: every source's name, built-ins first (computed, so plugins count)."""
    if name == "FORMATS":
        return SOURCES.names()
    raise AttributeError(name)


def format_of(collect) -> str:
    """collect.format, or the default."""
    return collect.format or DEFAULT_FORMAT


def source(fmt: str) -> Component:
    """The source called `fmt`; SpecError naming collect.format if there is none."""
    return SOURCES.get(fmt or DEFAULT_FORMAT, "collect.format")


def check_missing(policy: str) -> str:
    """collect.missing with its default; SpecError for an unknown policy."""
    return SOURCES.get("csv").declared("missing").resolve(policy, "collect.missing")


def check_column_kinds(kinds) -> dict:
    """collect.column_kinds: column name -> kind; SpecError naming collect.column_kinds.<column>."""
    return SOURCES.get("csv").declared("column_kinds").resolve(dict(kinds), "collect.column_kinds")


def check_image_options(color: str, image_size) -> None:
    """collect.color and collect.image_size of an image source."""
    _IMAGE_PARAMS[1].resolve(color, "collect.color")
    size = [int(v) for v in image_size]
    if size and (len(size) != 2 or not all(1 <= v <= MAX_IMAGE_SIDE for v in size)):
        raise SpecError(f"collect.image_size: {size} is not [height, width] with each in [1, {MAX_IMAGE_SIDE}]")


def plugin_values(collect) -> dict:
    """A plugin source's parameters, checked, defaults filled in: each from the collect field of its
    name if there is one (collect.label, ...), else from collect.params."""
    component = source(format_of(collect))
    given = json_format.MessageToDict(collect.params)
    fields = {f.name for f in collect.DESCRIPTOR.fields} - {"params"}
    values = {}
    for param in component.params:
        if param.name in fields:
            value = getattr(collect, param.name)
            if value:  # a proto field: 0, "" and [] mean unset
                if not isinstance(value, (str, int, float, bool)):
                    value = dict(value) if hasattr(value, "items") else list(value)
                values[param.name] = value
        elif param.name in given:
            values[param.name] = given.pop(param.name)
    for key in given:
        raise SpecError(
            f"collect.params.{key}: not a parameter of source {component.name!r} "
            f"(parameters: {', '.join(p.name for p in component.params) or 'none'})"
        )
    return component.resolve(values, "collect", strict=False, proto=False)


# A dataset version id (collect.dataset's @VERSION): content-addressed hex.
VERSION_RE = re.compile(r"[0-9a-f]{1,64}")


def dataset_ref(value: str) -> tuple[str, str]:
    """collect.dataset's NAME[@VERSION] as (name, version); an empty version means the newest."""
    name, _, version = value.partition("@")
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise SpecError(
            f"pipeline: collect.dataset: {value!r} is not NAME[@VERSION] (a name is {NAME_RULE})", "collect.dataset"
        )
    if "@" in value and not VERSION_RE.fullmatch(version):
        raise SpecError(
            f"pipeline: collect.dataset: version {version!r} of {value!r} is not a dataset version (hex digits)",
            "collect.dataset",
        )
    return name, version


def check_dataset(collect) -> None:
    """collect.dataset stands alone: a stored dataset has no source and is not read again, so format
    options would be ignored; they are an error instead."""
    dataset_ref(collect.dataset)
    for field, _value in collect.ListFields():
        if field.name != "dataset":
            raise SpecError(
                f"pipeline: collect.{field.name}: not allowed with collect.dataset (a stored dataset "
                "is trained on as it is; set either collect.source with its options or collect.dataset)",
                f"collect.{field.name}",
            )


def check(collect) -> None:
    """Checks a CollectSpec against its source's parameters; SpecError naming collect.<field>."""
    if collect.dataset:
        check_dataset(collect)
        return
    if not collect.source:
        raise SpecError(
            "collect.source is required (or collect.dataset: NAME[@VERSION], a dataset already in the store)",
            "collect.source",
        )
    fmt = format_of(collect)
    component = source(fmt)
    for name in ONLY:
        if getattr(collect, name) and component.param(name) is None:
            owners = [s.name for s in SOURCES if s.param(name) is not None]
            raise SpecError(f"collect.{name}: only for {' or '.join(owners)} sources, not {fmt!r}", f"collect.{name}")
    if component.plugin:
        plugin_values(collect)
        return
    if collect.params.fields:
        raise SpecError(f"collect.params: only for plugin sources, not {fmt!r}", "collect.params")
    for param in component.params:
        value = getattr(collect, param.name)
        if param.required and not value:
            raise SpecError(f"collect.{param.name} is required for {fmt} sources", f"collect.{param.name}")
        if param.name == "image_size":
            continue  # checked as a pair below
        if not isinstance(value, (str, int, float, bool)):
            value = dict(value) if param.type in ("map", "strmap") else list(value)
        param.resolve(value, f"collect.{param.name}")
    if component.param("image_size") is not None:
        check_image_options(collect.color, collect.image_size)


def walk_files(root: str) -> list[tuple[str, str]]:
    """The files a folder source consists of, as (relative path with '/', absolute path), sorted; hidden
    files and folders skipped. Collect reads a folder, and `cookline upload` sends one, by this one rule,
    so an uploaded folder is the same dataset version as the folder ingested where it lies."""
    out = []
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if not name.startswith("."):
                full = os.path.join(dirpath, name)
                out.append((os.path.relpath(full, root).replace(os.sep, "/"), full))
    return sorted(out)


def is_number(text: str) -> bool:
    """True when a CSV cell's text reads as a number (float's rule: "1e3", " 2 ", "nan" included)."""
    try:
        float(text)
        return True
    except ValueError:
        return False
