"""Validation of a pipeline's train section, free of TensorFlow (the gateway uses it too)."""
from __future__ import annotations

import math

from cookline.v1 import pipeline_pb2
from services.common.errors import invalid

# The model zoo: what each family trains on (the tensor after the process ops).
MODELS = ("mlp", "linear", "cnn", "mobilenet_v2", "text")
IMAGE_MODELS = ("cnn", "mobilenet_v2")
DEFAULT_HIDDEN = {"mlp": (32,), "cnn": (64,)}
NO_HIDDEN = ("linear", "mobilenet_v2")
DEFAULT_CONV_FILTERS = (16, 32)
DEFAULT_EMBEDDING_DIM = 32
OPTIMIZERS = ("adam", "sgd", "rmsprop")
# Validation metrics early stopping can watch, and whether higher is better.
STOPPING_METRICS = {"val_loss": False, "val_accuracy": True}
MIN_INPUT_SIZE = 32

# Model families the TF.js export can write (services/train/tfjs.py): every one.
TFJS_MODELS = MODELS


def check_export(pipeline: pipeline_pb2.PipelineSpec) -> None:
    """INVALID_ARGUMENT when an export format is asked of a model that cannot have it."""
    if pipeline.export.tfjs and pipeline.train.model not in TFJS_MODELS:
        raise invalid(f"export.tfjs: not available for model {pipeline.train.model!r} "
                      f"(available for {', '.join(TFJS_MODELS)})")


def _only_for(spec, field: str, models: tuple[str, ...], is_set: bool) -> None:
    if is_set and spec.model not in models:
        raise invalid(f"train.{field}: applies to model {' or '.join(models)}, not {spec.model!r}; remove it")


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
    out.optimizer = spec.optimizer or "adam"
    out.progress_every_batches = spec.progress_every_batches or 20
    if spec.model in NO_HIDDEN and spec.hidden_units:
        raise invalid(f"train.hidden_units: a {spec.model} model has no hidden dense layers; remove it")
    if not spec.hidden_units and spec.model in DEFAULT_HIDDEN:
        out.hidden_units[:] = DEFAULT_HIDDEN[spec.model]
    _only_for(spec, "conv_filters", ("cnn",), bool(spec.conv_filters))
    _only_for(spec, "embedding_dim", ("text",), spec.embedding_dim != 0)
    _only_for(spec, "alpha", ("mobilenet_v2",), spec.alpha != 0)
    _only_for(spec, "input_size", ("mobilenet_v2",), spec.input_size != 0)
    if spec.model == "cnn" and not spec.conv_filters:
        out.conv_filters[:] = DEFAULT_CONV_FILTERS
    if spec.model == "text":
        out.embedding_dim = spec.embedding_dim or DEFAULT_EMBEDDING_DIM
    if spec.model == "mobilenet_v2":
        out.alpha = spec.alpha or 1.0
    if not 1 <= out.epochs <= 10_000:
        raise invalid(f"train.epochs: {out.epochs} is not in [1, 10000]")
    if not 1 <= out.batch_size <= 65_536:
        raise invalid(f"train.batch_size: {out.batch_size} is not in [1, 65536]")
    if not (math.isfinite(out.learning_rate) and 0 < out.learning_rate <= 10):
        raise invalid(f"train.learning_rate: {out.learning_rate} is not in (0, 10]")
    if out.optimizer not in OPTIMIZERS:
        raise invalid(f"train.optimizer: {out.optimizer!r} is not supported (supported: {', '.join(OPTIMIZERS)})")
    if not 1 <= out.progress_every_batches <= 1_000_000:
        raise invalid(f"train.progress_every_batches: {out.progress_every_batches} is not in [1, 1000000]")
    for i, units in enumerate(out.hidden_units):
        if not 1 <= units <= 65_536:
            raise invalid(f"train.hidden_units[{i}]: {units} is not in [1, 65536]")
    for i, filters in enumerate(out.conv_filters):
        if not 1 <= filters <= 4096:
            raise invalid(f"train.conv_filters[{i}]: {filters} is not in [1, 4096]")
    if out.model == "text" and not 1 <= out.embedding_dim <= 4096:
        raise invalid(f"train.embedding_dim: {out.embedding_dim} is not in [1, 4096]")
    if out.model == "mobilenet_v2" and not (math.isfinite(out.alpha) and 0 < out.alpha <= 2):
        raise invalid(f"train.alpha: {out.alpha} is not in (0, 2]")
    if out.input_size and not MIN_INPUT_SIZE <= out.input_size <= 1024:
        raise invalid(f"train.input_size: {out.input_size} is not in [{MIN_INPUT_SIZE}, 1024]")
    if spec.HasField("early_stopping"):
        stopping = out.early_stopping
        stopping.metric = stopping.metric or "val_loss"
        if stopping.metric not in STOPPING_METRICS:
            raise invalid(f"train.early_stopping.metric: {stopping.metric!r} is not supported "
                          f"(supported: {', '.join(STOPPING_METRICS)})")
        if not 1 <= stopping.patience <= 10_000:
            raise invalid(f"train.early_stopping.patience: {stopping.patience} is not in [1, 10000]")
    if out.class_weights and out.balance_classes:
        raise invalid("train.class_weights: give weights per class or balanced, not both")
    for name, weight in sorted(out.class_weights.items()):
        if not (math.isfinite(weight) and 0 < weight <= 1e6):
            raise invalid(f"train.class_weights[{name!r}]: {weight} is not in (0, 1000000]")
    return out


# Model families that can be regressors (on a numeric label).
REGRESSION_MODELS = ("mlp", "linear")


def check_regression(spec: pipeline_pb2.TrainSpec) -> None:
    """INVALID_ARGUMENT when a setting of `spec` has no meaning for a regressor (a numeric label)."""
    if spec.model not in REGRESSION_MODELS:
        raise invalid(f"train.model: {spec.model!r} is a classifier, but the dataset's label is numeric "
                      f"(collect.numeric_label); regressors: {', '.join(REGRESSION_MODELS)}")
    if spec.early_stopping.metric == "val_accuracy":
        raise invalid("train.early_stopping.metric: 'val_accuracy' needs class labels; use val_loss for a regressor")
    if spec.class_weights or spec.balance_classes:
        raise invalid("train.class_weights: a regressor has no classes to weigh; remove it")


def check_class_weights(spec: pipeline_pb2.TrainSpec, class_names: list[str]) -> None:
    """INVALID_ARGUMENT when class_weights names a class the dataset does not have."""
    unknown = sorted(set(spec.class_weights) - set(class_names))
    if unknown:
        raise invalid(f"train.class_weights: {', '.join(map(repr, unknown))} not among the dataset's classes "
                      f"({', '.join(class_names)})")


def class_weight_dict(spec: pipeline_pb2.TrainSpec, class_names: list[str],
                      counts: dict[str, int]) -> dict[int, float] | None:
    """Keras' class_weight (class id -> weight), or None when every class weighs 1."""
    if spec.balance_classes:
        total, present = sum(counts.values()), [c for c in class_names if counts.get(c, 0) > 0]
        return {i: (total / (len(present) * counts[c]) if counts.get(c, 0) else 1.0)
                for i, c in enumerate(class_names)}
    if spec.class_weights:
        return {i: float(spec.class_weights.get(c, 1.0)) for i, c in enumerate(class_names)}
    return None


def model_input(model: str, processed: dict[str, tuple[str, list[int]]]) -> tuple[str, str, list[int]]:
    """(tensor name, dtype, per-row shape) a model family trains on, given the tensors after the ops.

    INVALID_ARGUMENT naming train.model when the data has no tensor the model can take.
    """
    has = ", ".join(f"{n} {d} {s}" for n, (d, s) in sorted(processed.items()) if n != "label")
    if model in IMAGE_MODELS:
        if "image" not in processed or len(processed["image"][1]) != 3:
            raise invalid(f"train.model: {model!r} is an image model and needs an 'image' tensor "
                          f"[height, width, channels]; the data has {has}")
        name = "image"
    elif model == "text":
        if "tokens" not in processed:
            raise invalid(f"train.model: 'text' needs 'tokens' (a vectorize_text op with mode: int); "
                          f"the data has {has}")
        name = "tokens"
    else:
        name = next((n for n in ("features", "image") if n in processed), None)
        if name is None:
            raise invalid(f"train.model: {model!r} needs 'features' or 'image' after the process ops; the data has "
                          f"{has} (text needs a vectorize_text op)")
    dtype, shape = processed[name]
    dtype = {"uint8": "uint8", "int64": "int32"}.get(dtype, "float32")
    return name, dtype, shape
