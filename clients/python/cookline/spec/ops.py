"""The process ops: name, parameters, defaults and ranges of each, and the check of an op list.

The process service implements them (services/process/ops); this is what a pipeline may say.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import json_format

from cookline.spec.errors import SpecError
from cookline.spec.params import Component, Param, Registry

OPS = Registry("op", "process", say="one of")


def _op(name: str, doc: str, *params: Param, deterministic: bool = True) -> Component:
    return OPS.register(Component(name, "op", params, doc, deterministic=deterministic))


def _seed() -> Param:
    return Param("seed", "int", "seed of the draws; they depend on (seed, epoch)", default=0)


# Registration order is the order `known ops` lists them in.
def _columns() -> Param:
    return Param("columns", "strs", "names of the numeric columns it works on; unset: every one")


_op("standardize", "features to zero mean and unit variance (fitted on the training split)", _columns())
_op("min_max", "features to [0, 1] by the training min and max", _columns())
_op(
    "fill_missing",
    "NaN features to the training mean or a constant",
    _columns(),
    Param(
        "strategy", "str", "'mean' (fitted) or 'constant' (uses value)", default="mean", choices=("mean", "constant")
    ),
    Param("value", "float", "the fill value of strategy 'constant'", default=0.0),
)
_op(
    "one_hot",
    "categorical columns to one-hot columns appended to features",
    Param("min_count", "int", "values seen fewer times go to the unseen column", default=1, lo=1, hi=1 << 40),
)
_op(
    "lookup",
    "categorical columns to vocabulary ids appended to features",
    Param("max_values", "int", "largest vocabulary per column; unset: no limit", lo=1, hi=10_000_000),
)
_op(
    "resize",
    "image to height x width (bilinear)",
    Param("height", "int", "output height in pixels", required=True, lo=1, hi=4096),
    Param("width", "int", "output width in pixels", required=True, lo=1, hi=4096),
)
_op("grayscale", "image to one channel (ITU-R 601 luma)")
_op(
    "random_flip",
    "flips training images at random",
    Param("mode", "str", "which flips", default="horizontal", choices=("horizontal", "vertical", "both")),
    _seed(),
    deterministic=False,
)
_op(
    "random_rotation",
    "rotates training images by a random angle",
    Param("max_degrees", "float", "largest rotation in degrees", required=True, lo=0, hi=180, lo_open=True),
    _seed(),
    deterministic=False,
)
_op(
    "random_brightness",
    "shifts training image brightness at random",
    Param(
        "max_delta",
        "float",
        "largest offset, as a fraction of the pixel range",
        required=True,
        lo=0,
        hi=1,
        lo_open=True,
    ),
    _seed(),
    deterministic=False,
)
_op(
    "box_augment",
    "flips and rescales training images with their boxes at random (detection data)",
    Param("flip", "str", "which flips", default="horizontal", choices=("horizontal", "vertical", "both", "none")),
    Param(
        "min_scale",
        "float",
        "smallest scale factor (below 1 shrinks the scene)",
        default=0.75,
        lo=0,
        hi=1,
        lo_open=True,
    ),
    Param("max_scale", "float", "largest scale factor (above 1 enlarges it and crops)", default=1.25, lo=1, hi=4),
    _seed(),
    deterministic=False,
)
_op(
    "vectorize_text",
    "text to bag-of-words features or token id sequences",
    Param("max_tokens", "int", "largest vocabulary", default=10_000, lo=1, hi=1_000_000),
    Param(
        "mode",
        "str",
        "tf_idf, multi_hot, count (features) or int (tokens)",
        default="tf_idf",
        choices=("tf_idf", "multi_hot", "count", "int"),
    ),
    Param("sequence_length", "int", "tokens per row for mode int; longer texts are cut", default=64, lo=1, hi=100_000),
)
_op(
    "shuffle",
    "shuffles rows through a bounded buffer",
    Param("buffer", "int", "rows held in the buffer; 1 means no shuffling", default=1000, lo=1, hi=10_000_000),
    Param("seed", "int", "seed of the shuffle", default=0),
    deterministic=False,
)


def where(i: int, name: str) -> str:
    """The path of op i in a pipeline file: process[i].<name>."""
    return f"process[{i}].{name}"


def kind_of(op) -> str | None:
    """The name of an Op message's op (its oneof, or a plugin op's name), or None when it has none."""
    kind = op.WhichOneof("kind")
    return op.plugin.name if kind == "plugin" else kind


def values(op) -> dict:
    """An Op message's parameters as a dict (a built-in's unset ones included, as proto3 zeros)."""
    if op.WhichOneof("kind") == "plugin":
        return json_format.MessageToDict(op.plugin.params)
    kind = kind_of(op)
    assert kind is not None, "an Op message with no op set"
    params = getattr(op, kind)
    return {f.name: getattr(params, f.name) for f in params.DESCRIPTOR.fields}


def resolve(op, i: int = 0) -> dict:
    """The parameters of op i, checked and with their defaults; SpecError naming process[i].<op>.<param>."""
    kind = kind_of(op)
    if kind is None:
        raise SpecError(f"process[{i}]: no op given (known ops: {', '.join(OPS.names())})", f"process[{i}]")
    plugin = op.WhichOneof("kind") == "plugin"
    if plugin and not kind:
        raise SpecError(
            f"process[{i}].plugin.name: required (plugin ops: "
            f"{', '.join(c.name for c in OPS.plugins()) or 'none installed'})"
        )
    component = OPS.get(kind, f"process[{i}]")
    if plugin and not component.plugin:
        raise SpecError(f"process[{i}].plugin.name: {kind!r} is a built-in op; write it as `- {kind}: ...`")
    return component.resolve(values(op), where(i, kind), strict=plugin, proto=not plugin)


def validate(ops: Iterable) -> None:
    """SpecError naming process[i] (and the parameter) for an empty, unknown or out-of-range op."""
    for i, op in enumerate(ops):
        resolve(op, i)


def deterministic(name: str) -> bool:
    """False for ops whose output changes with the epoch (shuffle, random augmentation)."""
    return OPS.get(name).deterministic
