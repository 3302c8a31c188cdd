"""Process ops on streams of row batches (dicts of numpy arrays sharing rows).

`validate` checks an op list (the rules are cookline.spec.ops'), `fit` computes fitted parameters from the TRAIN
rows, `apply` transforms a stream. All of it streams: memory is bounded by one
batch plus a shuffle buffer, however large the dataset. One module per family:
scaling (standardize, min_max, fill_missing), categorical (lookup, one_hot),
images (resize, grayscale, random_flip, random_rotation, random_brightness, box_augment),
text (vectorize_text), order (shuffle, rebatch). `graph` composes the fitted ops'
in-graph forms, which the exported model runs on the raw collected tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import grpc
import numpy as np

from cookline import tensors
from cookline.spec import ops as spec_ops
from cookline.v1 import pipeline_pb2
from services.common.errors import Fail
from services.process.ops.base import Batch, OpKind, graph_fn
from services.process.ops.categorical import Lookup, OneHot
from services.process.ops.images import BoxAugment, Grayscale, RandomBrightness, RandomFlip, RandomRotation, Resize
from services.process.ops.order import Shuffle, rebatch
from services.process.ops.plugin import PluginOpKind
from services.process.ops.scaling import FillMissing, MinMax, Standardize, scope
from services.process.ops.text import VectorizeText

KINDS: dict[str, OpKind] = {
    k.name: k
    for k in (
        Standardize(),
        MinMax(),
        FillMissing(),
        OneHot(),
        Lookup(),
        Resize(),
        Grayscale(),
        RandomFlip(),
        RandomRotation(),
        RandomBrightness(),
        BoxAugment(),
        VectorizeText(),
        Shuffle(),
    )
}

__all__ = [
    "KINDS",
    "kind_for",
    "validate",
    "fit",
    "chain",
    "apply",
    "rebatch",
    "Batch",
    "needs_fit",
    "split_at_first_random",
    "graph",
    "for_partition",
]

# Ops that can be scoped to numeric columns by name (`columns`).
SCOPED = ("standardize", "min_max", "fill_missing")


def kind_for(op: pipeline_pb2.Op) -> OpKind:
    """The implementation of an op: a built-in, or a plugin's (cookline.ops entry point)."""
    name = spec_ops.kind_of(op)
    assert name is not None, "an Op message with no op set (the spec package refuses it)"
    return KINDS[name] if name in KINDS else PluginOpKind.of(spec_ops.OPS.get(name))


def _where(i: int, op: pipeline_pb2.Op) -> str:
    return spec_ops.where(i, str(spec_ops.kind_of(op)))


def validate(ops: Iterable[pipeline_pb2.Op]) -> None:
    """SpecError (INVALID_ARGUMENT) naming process[i] (and the parameter) for an empty, unknown or
    out-of-range op."""
    spec_ops.validate(ops)


def _chain(ops, batches: Iterable[Batch], epoch: int, training: bool, deterministic_only: bool) -> Iterator[Batch]:
    stream: Iterator[Batch] = iter(batches)
    for i, op in enumerate(ops):
        kind = kind_for(op)
        if deterministic_only and not kind.deterministic:
            continue
        stream = kind.apply(op, _where(i, op), stream, epoch, training)
    return stream


def fit(
    ops: list[pipeline_pb2.Op],
    pull: Callable[[], Iterable[Batch]] | Iterable[Batch],
    feature_columns: list[str] | None = None,
) -> tuple[list[pipeline_pb2.Op], int]:
    """Fits every op that needs it on the TRAIN rows; returns fitted copies and the row count.

    `feature_columns` names the dataset's numeric columns, for ops scoped to `columns`.

    `pull()` gives a fresh stream of the TRAIN rows. Each op that needs fitting
    sees the rows as transformed by the (already fitted, deterministic) ops
    before it, so it takes one pass per such op; with none, one pass counts the rows.
    A plain iterable is accepted when at most one op needs fitting.
    """
    validate(ops)
    fitted = [pipeline_pb2.Op() for _ in ops]
    for i, (out, op) in enumerate(zip(fitted, ops, strict=True)):
        out.CopyFrom(op)
        out.ClearField("fitted")
        if out.WhichOneof("kind") in SCOPED:
            scope(out, _where(i, out), feature_columns)
    stream_of = pull if callable(pull) else (lambda it=iter(pull): it)  # noqa: B008 (one iterator, bound once: a list is pulled once)
    rows = None
    for i, op in enumerate(fitted):
        fitter = kind_for(op).fitter(op, _where(i, op))
        if fitter is None:
            continue
        count = 0
        for batch in _chain(fitted[:i], stream_of(), 0, True, deterministic_only=True):
            count += len(batch["label"]) if "label" in batch else len(next(iter(batch.values())))
            fitter.add(batch)
        if count == 0:
            raise Fail(grpc.StatusCode.FAILED_PRECONDITION, "process: the training split has no rows to fit on")
        for name, value in fitter.done().items():
            tensors.from_numpy(value, out=op.fitted[name])
        rows = count
    if rows is None:
        rows = sum(len(next(iter(b.values()))) for b in stream_of())
    return fitted, rows


def for_partition(ops: Iterable[pipeline_pb2.Op], index: int) -> list[pipeline_pb2.Op]:
    """Copies of `ops` for part `index` of a partitioned stream: every random op's seed mixed with the
    index, so each part shuffles (and augments) with its own seed, the same every time."""
    out = []
    for op in ops:
        copy = pipeline_pb2.Op()
        copy.CopyFrom(op)
        params = OpKind.params(copy)
        if not kind_for(op).deterministic and hasattr(params, "seed"):  # a plugin's random op seeds itself
            params.seed = int(np.random.SeedSequence([params.seed & 0xFFFFFFFF, index]).generate_state(1)[0])
        out.append(copy)
    return out


def needs_fit(ops: Iterable[pipeline_pb2.Op]) -> bool:
    """True when any op must be fitted on the training rows first (or scoped to named columns)."""
    return any(
        kind_for(op).fitter(op, _where(i, op)) is not None
        or (op.WhichOneof("kind") in SCOPED and len(getattr(op, op.WhichOneof("kind")).columns))
        for i, op in enumerate(ops)
    )


def graph(fitted_ops: list[pipeline_pb2.Op]):
    """The fitted ops as one in-graph function (dict of TF tensors -> dict), for the exported
    model; its `resources` are the lookup tables the ops use. Training-only ops do nothing."""
    steps = [kind_for(op).graph(op, _where(i, op)) for i, op in enumerate(fitted_ops)]

    def run(tensors):
        for step in steps:
            tensors = step(tensors)
        return tensors

    return graph_fn(run, *[r for step in steps for r in getattr(step, "resources", [])])


def split_at_first_random(ops: list[pipeline_pb2.Op]) -> tuple[list[pipeline_pb2.Op], list[pipeline_pb2.Op]]:
    """(deterministic prefix, rest from the first random op on): the prefix's output is the
    same every epoch, so a consumer can compute it once and cache it; the rest runs every epoch."""
    for i, op in enumerate(ops):
        if not kind_for(op).deterministic:
            return ops[:i], ops[i:]
    return ops, []


def changes_data(ops: Iterable[pipeline_pb2.Op], training: bool) -> bool:
    """False when no op would touch the rows (no ops, or only augmentation outside TRAIN)."""
    return any(training or kind_for(op).deterministic or op.WhichOneof("kind") == "shuffle" for op in ops)


def chain(ops: list[pipeline_pb2.Op], batches: Iterable[Batch], epoch: int, training: bool = True) -> Iterator[Batch]:
    """Applies `ops` in order to a stream, keeping whatever batch sizes the ops give.

    `training` is True for the TRAIN subset: only then do random augmentations run.
    """
    validate(ops)
    return _chain(ops, batches, epoch, training, deterministic_only=False)


def apply(
    ops: list[pipeline_pb2.Op], batches: Iterable[Batch], epoch: int, batch_size: int, training: bool = True
) -> Iterator[Batch]:
    """chain(), re-batched to batch_size rows."""
    return rebatch(chain(ops, batches, epoch, training), batch_size)


# --- the schema an op list produces --------------------------------------------------


def output_fields(
    fields: dict[str, tuple[str, list[int]]], fitted_ops: list[pipeline_pb2.Op]
) -> dict[str, tuple[str, list[int]]]:
    """Tensor name -> (dtype name, per-row shape) of batches after the (fitted) ops.

    `fields` is the dataset's schema in the same form, e.g. {"image": ("uint8", [8, 8, 1])}.
    """
    out = {k: (d, list(s)) for k, (d, s) in fields.items()}
    for op in fitted_ops:
        kind = op.WhichOneof("kind")
        p = getattr(op, kind)
        if kind == "plugin":
            out = PluginOpKind.of(spec_ops.OPS.get(op.plugin.name)).output_fields(op, out)
            continue
        width = out["features"][1][0] if "features" in out else 0
        if kind in ("lookup", "one_hot"):
            columns = tensors.to_numpy(op.fitted["columns"]) if "columns" in op.fitted else np.empty(0, np.int64)
            k = out.get("categorical", ("string", [0]))[1][0]
            added = k if kind == "lookup" else sum(int((columns == j).sum()) + 1 for j in range(k))
            out.pop("categorical", None)
            out["features"] = ("float32", [width + added])
        elif kind == "vectorize_text":
            out.pop("text", None)
            settings = spec_ops.OPS.get(kind).resolve(spec_ops.values(op), kind)
            if settings["mode"] == "int":
                out["tokens"] = ("int64", [settings["sequence_length"]])
            else:
                size = len(op.fitted["vocabulary"].string_values) if "vocabulary" in op.fitted else 0
                out["features"] = ("float32", [width + size + 1])
        elif kind == "resize" and "image" in out:
            dtype, shape = out["image"]
            out["image"] = (dtype, [int(p.height), int(p.width), shape[2]])
        elif kind == "grayscale" and "image" in out:
            dtype, shape = out["image"]
            out["image"] = (dtype, shape[:2] + [1])
        elif kind in ("standardize", "min_max", "fill_missing") and "features" in out:
            out["features"] = ("float32", out["features"][1])
    return out
