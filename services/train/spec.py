"""Validation of a pipeline's train section, free of TensorFlow (the gateway uses it too)."""
from __future__ import annotations

from cookline.v1 import pipeline_pb2
from services.common.errors import invalid

# Model families: mlp (dense hidden layers) and linear (multinomial logistic regression).
MODELS = ("mlp", "linear")
DEFAULT_HIDDEN = (32,)


# Model families the TF.js export can write (a plain stack of Dense layers).
TFJS_MODELS = ("mlp", "linear")


def check_export(pipeline: pipeline_pb2.PipelineSpec) -> None:
    """INVALID_ARGUMENT when an export format is asked of a model that cannot have it."""
    if pipeline.export.tfjs and pipeline.train.model not in TFJS_MODELS:
        raise invalid(f"export.tfjs: not available for model {pipeline.train.model!r} "
                      f"(available for {', '.join(TFJS_MODELS)})")


def resolve(spec: pipeline_pb2.TrainSpec) -> pipeline_pb2.TrainSpec:
    """Validates a train spec and fills in its defaults; INVALID_ARGUMENT names the field."""
    if not spec.model:
        raise invalid("train.model: required (supported: " + ", ".join(MODELS) + ")")
    if spec.model not in MODELS:
        raise invalid(f"train.model: {spec.model!r} is not supported (supported: {', '.join(MODELS)})")
    out = pipeline_pb2.TrainSpec()
    out.CopyFrom(spec)
    out.epochs = spec.epochs or 10
    out.batch_size = spec.batch_size or 32
    out.learning_rate = spec.learning_rate or 0.001
    out.progress_every_batches = spec.progress_every_batches or 20
    if spec.model == "linear" and spec.hidden_units:
        raise invalid("train.hidden_units: a linear model has no hidden layers; remove it or use model: mlp")
    if spec.model == "mlp" and not spec.hidden_units:
        out.hidden_units[:] = DEFAULT_HIDDEN
    if not 1 <= out.epochs <= 10_000:
        raise invalid(f"train.epochs: {out.epochs} is not in [1, 10000]")
    if not 1 <= out.batch_size <= 65_536:
        raise invalid(f"train.batch_size: {out.batch_size} is not in [1, 65536]")
    if not 0 < out.learning_rate <= 10:
        raise invalid(f"train.learning_rate: {out.learning_rate} is not in (0, 10]")
    if not 1 <= out.progress_every_batches <= 1_000_000:
        raise invalid(f"train.progress_every_batches: {out.progress_every_batches} is not in [1, 1000000]")
    for i, units in enumerate(out.hidden_units):
        if not 1 <= units <= 65_536:
            raise invalid(f"train.hidden_units[{i}]: {units} is not in [1, 65536]")
    return out
