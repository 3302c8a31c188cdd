"""What a pipeline may say, in one place: for every source, op and model family, its name,
parameters, defaults, ranges and validation.

Free of TensorFlow and of gRPC servers: the gateway, the services and the CLI import it; it
imports none of them. A broken rule raises `SpecError` naming the field (for example
"process[2].resize.height: 0 is not in [1, 4096]"); the services' RPC layer turns it into
INVALID_ARGUMENT.

    from cookline import spec
    pipeline = spec.parse(text, base_dir)   # YAML -> checked PipelineSpec with defaults
    spec.validate(pipeline_message)         # the same checks on a PipelineSpec message
    spec.OPS.get("resize").params           # the declarative description
"""

from __future__ import annotations

from cookline.spec.errors import SourceDenied, SourceNotFound, SpecError
from cookline.spec.names import NAME_RE, check_name
from cookline.spec.ops import OPS
from cookline.spec.params import Component, Param, Registry
from cookline.spec.pipeline import GATE_METRICS, check_split, parse, resolve_source, validate
from cookline.spec.sources import SOURCES, dataset_ref
from cookline.spec.train import MODELS_REGISTRY as MODELS

__all__ = [
    "SpecError",
    "SourceDenied",
    "SourceNotFound",
    "dataset_ref",
    "Param",
    "Component",
    "Registry",
    "SOURCES",
    "OPS",
    "MODELS",
    "parse",
    "validate",
    "resolve_source",
    "check_name",
    "check_split",
    "NAME_RE",
    "GATE_METRICS",
    "describe",
]


def describe() -> dict:
    """Every source, op and model family with its parameters (JSON-able), built-ins and plugins."""
    from cookline.spec.train import EARLY_STOPPING, TRAIN_PARAMS

    return {
        "sources": [c.describe() for c in SOURCES],
        "ops": [c.describe() for c in OPS],
        "models": [c.describe() for c in MODELS],
        "train": [p.describe() for p in TRAIN_PARAMS],
        "early_stopping": [p.describe() for p in EARLY_STOPPING],
    }
