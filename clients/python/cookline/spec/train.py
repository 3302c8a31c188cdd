"""The train section: the model families (the zoo) and the training settings, with their
defaults and ranges; free of TensorFlow (the gateway, train and the CLI use it)."""

from __future__ import annotations

import re

from google.protobuf import json_format

from cookline.spec.errors import SpecError
from cookline.spec.names import NAME_RE, NAME_RULE
from cookline.spec.params import Component, Param, Registry
from cookline.v1 import pipeline_pb2

MODELS_REGISTRY = Registry("model", "train.model")


def _hidden(default) -> Param:
    return Param(
        "hidden_units",
        "ints",
        "width of each hidden dense layer",
        default=default,
        lo=1,
        hi=65_536,
        absent="a {model} model has no hidden dense layers; remove it",
    )


def _model(
    name: str,
    doc: str,
    *params: Param,
    inputs: tuple[str, ...],
    regressor: bool = False,
    tfjs: bool = False,
    check=None,
) -> Component:
    return MODELS_REGISTRY.register(
        Component(name, "model", params, doc, check=check, inputs=inputs, regressor=regressor, tfjs=tfjs)
    )


_model(
    "mlp",
    "dense classifier (or regressor) with ReLU hidden layers",
    _hidden((32,)),
    inputs=("features", "image"),
    regressor=True,
    tfjs=True,
)
_model("linear", "multinomial logistic (or linear) regression", inputs=("features", "image"), regressor=True, tfjs=True)
_model(
    "cnn",
    "small conv net on image",
    _hidden((64,)),
    Param("conv_filters", "ints", "output channels of each 3x3 convolution", default=(16, 32), lo=1, hi=4096),
    inputs=("image",),
    tfjs=True,
)
_model(
    "mobilenet_v2",
    "MobileNetV2, randomly initialised or from ImageNet weights, on image",
    Param("alpha", "float", "width multiplier", default=1.0, lo=0, hi=2, lo_open=True),
    Param(
        "input_size",
        "int",
        "side the image is resized to in the model; unset: its own size (at least 32)",
        lo=32,
        hi=1024,
    ),
    Param(
        "weights",
        "str",
        "initial weights: imagenet (Keras' standard file, from the Keras cache folder) or a weights file's path",
        absent="only mobilenet_v2 starts from stored weights; start another family from a model with train.base",
    ),
    inputs=("image",),
    tfjs=True,
)
# The tensors a detection dataset has (the voc and coco sources): "boxes" float32 [max_boxes, 4]
# (ymin, xmin, ymax, xmax, as fractions of the image's height and width), "box_labels" int32
# [max_boxes] (class ids into the label's class names; -1 pads), "box_count" int32 (boxes used).
DETECTION_TENSORS = ("boxes", "box_labels", "box_count")
BACKBONES = ("cnn", "mobilenet_v2")


def _check_detector(values: dict, where: str) -> None:
    if values.get("workers", 1) > 1:
        raise SpecError(f"{where}.workers: the detector family trains in one process (workers: 1)", f"{where}.workers")
    if values.get("class_weights"):
        raise SpecError(f"{where}.class_weights: the detector weighs no classes; remove it", f"{where}.class_weights")
    if values.get("backbone") == "mobilenet_v2" and values.get("conv_filters") != DETECTOR_FILTERS:
        raise SpecError(
            f"{where}.conv_filters: the mobilenet_v2 backbone has no conv_filters (backbone cnn has); remove it",
            f"{where}.conv_filters",
        )


DETECTOR_FILTERS = [32, 64, 128]
_model(
    "detector",
    "single-stage object detector (CenterNet-style heatmap and box-size heads) on image; answers boxes, "
    "labels and scores",
    Param("backbone", "str", "the network the heads sit on", default="cnn", choices=BACKBONES),
    Param(
        "conv_filters",
        "ints",
        "backbone cnn: output channels of each 3x3 convolution",
        default=tuple(DETECTOR_FILTERS),
        lo=1,
        hi=4096,
    ),
    Param("alpha", "float", "backbone mobilenet_v2: width multiplier", default=1.0, lo=0, hi=2, lo_open=True),
    Param("score_threshold", "float", "detections scoring below this are dropped", default=0.3, lo=0, hi=0.999),
    Param(
        "iou_threshold",
        "float",
        "non-max suppression: overlap (IoU) above which the lower-scoring box of a class goes",
        default=0.5,
        lo=0,
        hi=1,
        lo_open=True,
    ),
    Param("max_detections", "int", "most boxes answered per image", default=20, lo=1, hi=1000),
    inputs=("image",),
    check=_check_detector,
)
_model(
    "text",
    "embedding + average pooling on tokens",
    _hidden(None),
    Param("embedding_dim", "int", "size of the token embedding", default=32, lo=1, hi=4096),
    inputs=("tokens",),
    tfjs=True,
)

# The training settings every family shares (train.<name>).
TRAIN_PARAMS = (
    Param("epochs", "int", "passes over the training split", default=10, lo=1, hi=10_000),
    Param("batch_size", "int", "rows per training step", default=32, lo=1, hi=65_536),
    Param("learning_rate", "float", "step size of the optimizer", default=0.001, lo=0, hi=10, lo_open=True),
    Param(
        "optimizer", "str", "the optimizer", default="adam", choices=("adam", "sgd", "rmsprop"), choices_say="supported"
    ),
    Param("progress_every_batches", "int", "batches between progress updates", default=20, lo=1, hi=1_000_000),
    Param("seed", "int", "seed of the weight initialisation, the default shuffle and dropout", default=0),
    Param(
        "workers",
        "int",
        "train replicas that train together (MultiWorkerMirroredStrategy); batch_size is the "
        "global batch, a multiple of workers",
        default=1,
        lo=1,
        hi=64,
    ),
    Param(
        "class_weights",
        "map",
        "weight of each class in the loss, by class name; unset classes weigh 1",
        lo=0,
        hi=1e6,
        lo_open=True,
    ),
)
# Transfer learning: the settings of train.base (start from a model) and train.fine_tune.
TRANSFER_PARAMS = (
    Param(
        "base",
        "str",
        "model to start from: NAME:VERSION or NAME@ALIAS in the registry, a .keras file or SavedModel "
        "directory (path or s3:// URI); a detector starts from a cnn, mobilenet_v2 or detector model",
    ),
    Param(
        "freeze",
        "str",
        "layers of the base that stay frozen: base (all), none, or the first N (a detector: of its backbone)",
    ),
)
FINE_TUNE = (
    Param("epochs", "int", "epochs of the second phase", required=True, lo=1, hi=10_000),
    Param(
        "learning_rate",
        "float",
        "step size of the second phase; unset: train.learning_rate / 10",
        lo=0,
        hi=10,
        lo_open=True,
    ),
    Param("unfreeze", "str", "layers that become trainable: all, or the last N of the base", default="all"),
)
# The family settings a base model brings with it (they describe its architecture; a detector's
# backbone is the base's).
ARCHITECTURE = ("conv_filters", "embedding_dim", "alpha", "input_size", "backbone")
# The Keras ImageNet weights of MobileNetV2 exist for these widths and input sizes (Keras'
# keras.applications.MobileNetV2; another input size uses the 224 file).
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
IMAGENET_SIZES = (96, 128, 160, 192, 224)
_MODEL_REF = re.compile(r"(?P<name>[^:@/]+)(?::(?P<version>[^:@/]*)|@(?P<alias>[^:@/]*))?")


def is_path(base: str) -> bool:
    """True when train.base names a file, folder or s3:// URI rather than a registry model."""
    return "/" in base or base.endswith(".keras") or base.startswith(".") or "://" in base


def local_base(spec: pipeline_pb2.TrainSpec) -> bool:
    """True when train.base is a path on the services' machine."""
    return bool(spec.base) and is_path(spec.base) and "://" not in spec.base


def local_paths(spec: pipeline_pb2.TrainSpec) -> list[str]:
    """The train settings that are paths on the services' machine (inside COOKLINE_SOURCE_ROOTS):
    train.base when it is one, train.weights when it is a file rather than imagenet."""
    fields = ["base"] if local_base(spec) else []
    return fields + (["weights"] if spec.weights and spec.weights != "imagenet" else [])


def base_ref(base: str) -> tuple[str, int, str]:
    """(name, version, alias) of a registry train.base: NAME:VERSION, NAME@ALIAS or NAME (version 0:
    the newest). SpecError naming train.base when it is not one."""
    match = _MODEL_REF.fullmatch(base)
    if match is None or not NAME_RE.fullmatch(match["name"]) or ".." in match["name"]:
        raise SpecError(
            f"train.base: {base!r} is neither a registry model (NAME:VERSION, NAME@ALIAS or NAME, a name is "
            f"{NAME_RULE}) nor a path (a .keras file or a folder: it contains a '/') or an s3:// URI",
            "train.base",
        )
    version, alias = match["version"], match["alias"]
    if version is not None and not (version.isdigit() and int(version) >= 1):
        raise SpecError(f"train.base: version {version!r} of {base!r} is not a version (a whole number from 1)")
    if alias is not None and not NAME_RE.fullmatch(alias):
        raise SpecError(f"train.base: alias {alias!r} of {base!r} is not an alias name ({NAME_RULE})")
    return match["name"], int(version or 0), alias or ""


def layer_count(value: str, where: str) -> int:
    """The N of a freeze or unfreeze setting that is a number of layers (0 for a word); SpecError naming
    `where` for anything else. Whether N fits the base is checked once the base is loaded."""
    words = {"train.freeze": ("base", "none"), "train.fine_tune.unfreeze": ("all",)}[where]
    if value in words:
        return 0
    if not value.isdigit() or int(value) < 1:
        raise SpecError(
            f"{where}: {value!r} is not {', '.join(words)} or a number of layers (a whole number from 1)", where
        )
    return int(value)


def imagenet_weights_file(alpha: float, size: int) -> str:
    """The file name Keras gives MobileNetV2's ImageNet weights without the classifier top, for a width
    multiplier and a (square) input side: the name keras.applications.MobileNetV2 looks for in
    KERAS_HOME/models."""
    rows = size if size in IMAGENET_SIZES else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"


def _check_transfer(spec: pipeline_pb2.TrainSpec, out: pipeline_pb2.TrainSpec, family: Component) -> None:
    """train.base, freeze, fine_tune and weights: what can be checked without the base model."""
    if spec.base:
        if spec.weights:
            raise SpecError(
                "train.weights: not with train.base (the base brings its weights); remove one", "train.weights"
            )
        if not is_path(spec.base):
            base_ref(spec.base)
        for name in ARCHITECTURE:
            if hasattr(spec, name) and _get(spec, name):
                raise SpecError(
                    f"train.{name}: the architecture comes from train.base ({spec.base!r}); remove it", f"train.{name}"
                )
        if out.workers > 1:
            raise SpecError("train.base: not available with train.workers > 1 yet; train on one worker", "train.base")
    if spec.weights == "imagenet" and out.alpha not in IMAGENET_ALPHAS:
        raise SpecError(
            f"train.alpha: {out.alpha} has no ImageNet weights (train.weights: imagenet needs one of "
            f"{', '.join(map(str, IMAGENET_ALPHAS))})",
            "train.alpha",
        )
    starts = bool(spec.base or spec.weights)
    if spec.freeze:
        if not starts:
            raise SpecError(
                "train.freeze: needs train.base or train.weights (there is nothing to freeze)", "train.freeze"
            )
        layer_count(spec.freeze, "train.freeze")
    elif starts:
        out.freeze = "base"
    if spec.HasField("fine_tune"):
        if not starts:
            raise SpecError("train.fine_tune: needs train.base or train.weights", "train.fine_tune")
        if out.freeze == "none":
            raise SpecError(
                "train.fine_tune: train.freeze is none, so every layer trains already; remove one", "train.fine_tune"
            )
        if out.workers > 1:
            raise SpecError(
                "train.fine_tune: not available with train.workers > 1 yet; train on one worker", "train.fine_tune"
            )
        for param in FINE_TUNE:
            value = param.resolve(getattr(spec.fine_tune, param.name), f"train.fine_tune.{param.name}")
            setattr(out.fine_tune, param.name, value)
        if not out.fine_tune.learning_rate:
            out.fine_tune.learning_rate = out.learning_rate / 10
        layer_count(out.fine_tune.unfreeze, "train.fine_tune.unfreeze")


# Validation metrics early stopping can watch, and whether higher is better.
STOPPING_METRICS = {"val_loss": False, "val_accuracy": True}
EARLY_STOPPING = (
    Param(
        "metric",
        "str",
        "validation metric watched",
        default="val_loss",
        choices=tuple(STOPPING_METRICS),
        choices_say="supported",
    ),
    Param("patience", "int", "epochs without improvement before stopping", required=True, lo=1, hi=10_000),
)
_INPUT_SIZE = MODELS_REGISTRY.get("mobilenet_v2").declared("input_size")
assert _INPUT_SIZE.lo is not None  # declared with a lower bound above
MIN_INPUT_SIZE = int(_INPUT_SIZE.lo)


def __getattr__(name: str):
    """Family lists computed from the registry (so plugins count): MODELS, IMAGE_MODELS, TFJS_MODELS,
    REGRESSION_MODELS."""
    families = list(MODELS_REGISTRY)
    if name == "MODELS":
        return tuple(m.name for m in families)
    if name == "IMAGE_MODELS":  # image classifiers
        return tuple(m.name for m in families if m.inputs == ("image",) and m.name != "detector")
    if name == "TFJS_MODELS":
        return tuple(m.name for m in families if m.tfjs)
    if name == "REGRESSION_MODELS":
        return tuple(m.name for m in families if m.regressor)
    raise AttributeError(name)


def check_export(pipeline: pipeline_pb2.PipelineSpec) -> None:
    """SpecError when an export format is asked of a model that cannot have it."""
    if pipeline.export.tfjs and not MODELS_REGISTRY.get(pipeline.train.model).tfjs:
        available = [m.name for m in MODELS_REGISTRY if m.tfjs]
        raise SpecError(
            f"export.tfjs: not available for model {pipeline.train.model!r} (available for {', '.join(available)})",
            "export.tfjs",
        )


def _family_params() -> dict[str, list[Component]]:
    """Parameter name -> the families that have it (family parameters only, in registration order)."""
    owners: dict[str, list[Component]] = {}
    for family in MODELS_REGISTRY:
        for param in family.params:
            owners.setdefault(param.name, []).append(family)
    return owners


def _get(spec: pipeline_pb2.TrainSpec, name: str):
    value = getattr(spec, name)
    if isinstance(value, (int, float, str, bool)):
        return value
    return dict(value) if hasattr(value, "items") else list(value)


def _set(out: pipeline_pb2.TrainSpec, name: str, value) -> None:
    if isinstance(value, (list, tuple)):
        getattr(out, name)[:] = value
    elif isinstance(value, dict):
        getattr(out, name).clear()
        getattr(out, name).update(value)
    else:
        setattr(out, name, value)


def resolve(spec: pipeline_pb2.TrainSpec) -> pipeline_pb2.TrainSpec:
    """Validates a train spec and fills in its defaults; SpecError names the field."""
    if not spec.model:
        raise SpecError("train.model: required (supported: " + ", ".join(MODELS_REGISTRY.names()) + ")", "train.model")
    family = MODELS_REGISTRY.get(spec.model)
    out = pipeline_pb2.TrainSpec()
    out.CopyFrom(spec)
    for name, owners in _family_params().items():  # a family's own setting given to another family
        if family.param(name) is None and hasattr(spec, name) and _get(spec, name):
            template = next((p.absent for o in owners for p in o.params if p.name == name and p.absent), "")
            message = (
                template.format(model=spec.model)
                if template
                else f"applies to model {' or '.join(o.name for o in owners)}, not {spec.model!r}; remove it"
            )
            raise SpecError(f"train.{name}: {message}", f"train.{name}")
    for param in TRAIN_PARAMS + TRANSFER_PARAMS + family.params:
        if spec.base and param.name in ARCHITECTURE + ("hidden_units",) and not _get(spec, param.name):
            continue  # the architecture is the base's, and the new head has no hidden layers unless given
        if hasattr(spec, name := param.name):
            _set(out, name, param.resolve(_get(spec, name), f"train.{name}"))
    _check_transfer(spec, out, family)
    given = json_format.MessageToDict(spec.params)
    if given and not family.plugin:
        raise SpecError(f"train.params: only for plugin model families, not {spec.model!r}", "train.params")
    if family.plugin:
        own = {p.name for p in family.params if not hasattr(spec, p.name)}
        for key in given:
            if key not in own:
                raise SpecError(
                    f"train.params.{key}: not a parameter of model {spec.model!r} "
                    f"(parameters: {', '.join(sorted(own)) or 'none'})"
                )
        resolved = {
            p.name: p.resolve(given.get(p.name), f"train.{p.name}", proto=False) for p in family.params if p.name in own
        }
        out.params.Clear()
        out.params.update({k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items() if v is not None})
    if spec.HasField("early_stopping"):
        for param in EARLY_STOPPING:
            value = param.resolve(getattr(spec.early_stopping, param.name), f"train.early_stopping.{param.name}")
            setattr(out.early_stopping, param.name, value)
    if family.check is not None:
        family.check(plugin_params(out) | {p.name: _get(out, p.name) for p in TRAIN_PARAMS}, "train")
    if out.class_weights and out.balance_classes:
        raise SpecError("train.class_weights: give weights per class or balanced, not both", "train.class_weights")
    if out.batch_size % out.workers:
        raise SpecError(
            f"train.batch_size: {out.batch_size} is not a multiple of train.workers ({out.workers}): "
            f"each worker takes batch_size / workers rows per step",
            "train.batch_size",
        )
    return out


def plugin_params(spec: pipeline_pb2.TrainSpec) -> dict:
    """The parameters of a (resolved) plugin family: train.params and the family's TrainSpec fields."""
    family = MODELS_REGISTRY.get(spec.model)
    values = json_format.MessageToDict(spec.params)
    for param in family.params:  # a Struct holds every number as a double
        if param.type == "int" and isinstance(values.get(param.name), float):
            values[param.name] = int(values[param.name])
        elif param.type == "ints" and isinstance(values.get(param.name), list):
            values[param.name] = [int(v) for v in values[param.name]]
    values.update({p.name: _get(spec, p.name) for p in family.params if hasattr(spec, p.name)})
    return values


def check_regression(spec: pipeline_pb2.TrainSpec) -> None:
    """SpecError when a setting of `spec` has no meaning for a regressor (a numeric label)."""
    if not MODELS_REGISTRY.get(spec.model).regressor:
        regressors = [m.name for m in MODELS_REGISTRY if m.regressor]
        raise SpecError(
            f"train.model: {spec.model!r} is a classifier, but the dataset's label is numeric "
            f"(collect.numeric_label); regressors: {', '.join(regressors)}",
            "train.model",
        )
    if spec.early_stopping.metric == "val_accuracy":
        raise SpecError("train.early_stopping.metric: 'val_accuracy' needs class labels; use val_loss for a regressor")
    if spec.class_weights or spec.balance_classes:
        raise SpecError("train.class_weights: a regressor has no classes to weigh; remove it")


def check_class_weights(spec: pipeline_pb2.TrainSpec, class_names: list[str]) -> None:
    """SpecError when class_weights names a class the dataset does not have."""
    unknown = sorted(set(spec.class_weights) - set(class_names))
    if unknown:
        raise SpecError(
            f"train.class_weights: {', '.join(map(repr, unknown))} not among the dataset's classes "
            f"({', '.join(class_names)})"
        )


def class_weight_dict(
    spec: pipeline_pb2.TrainSpec, class_names: list[str], counts: dict[str, int]
) -> dict[int, float] | None:
    """Keras' class_weight (class id -> weight), or None when every class weighs 1."""
    if spec.balance_classes:
        total, present = sum(counts.values()), [c for c in class_names if counts.get(c, 0) > 0]
        return {i: (total / (len(present) * counts[c]) if counts.get(c, 0) else 1.0) for i, c in enumerate(class_names)}
    if spec.class_weights:
        return {i: float(spec.class_weights.get(c, 1.0)) for i, c in enumerate(class_names)}
    return None


def is_detector(model: str) -> bool:
    """True for the detector family (boxes out, trained on detection data)."""
    return model == "detector"


def check_detection_data(model: str, processed: dict[str, tuple[str, list[int]]]) -> None:
    """SpecError naming train.model when a detector's data has no boxes, or a classifier is asked of
    nothing but boxes (never: detection data keeps the first object's class as "label")."""
    if is_detector(model):
        missing = [n for n in DETECTION_TENSORS if n not in processed]
        if missing:
            raise SpecError(
                f"train.model: 'detector' needs boxes ({', '.join(DETECTION_TENSORS)}: collect.format voc or "
                f"coco); the data has no {missing[0]!r}",
                "train.model",
            )


def model_input(model: str, processed: dict[str, tuple[str, list[int]]]) -> tuple[str, str, list[int]]:
    """(tensor name, dtype, per-row shape) a model family trains on, given the tensors after the ops.

    SpecError naming train.model when the data has no tensor the model can take.
    """
    has = ", ".join(f"{n} {d} {s}" for n, (d, s) in sorted(processed.items()) if n != "label")
    inputs = MODELS_REGISTRY.get(model).inputs
    name = next((n for n in inputs if n in processed), None)
    if inputs == ("image",):
        if name is None or len(processed["image"][1]) != 3:
            raise SpecError(
                f"train.model: {model!r} is an image model and needs an 'image' tensor "
                f"[height, width, channels]; the data has {has}"
            )
    elif inputs == ("tokens",):
        if name is None:
            raise SpecError(
                f"train.model: {model!r} needs 'tokens' (a vectorize_text op with mode: int); the data has {has}"
            )
    elif name is None:
        raise SpecError(
            f"train.model: {model!r} needs {' or '.join(map(repr, inputs))} after the process ops; "
            f"the data has {has} (text needs a vectorize_text op)"
        )
    dtype, shape = processed[name]
    dtype = {"uint8": "uint8", "int64": "int32"}.get(dtype, "float32")
    return name, dtype, shape
