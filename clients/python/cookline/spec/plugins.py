"""Plugins: third-party sources, ops and model families, found through Python entry points.

A plugin package declares each component in the spec's own terms (a `Component` with its
`Param`s and an `implementation` "module:attribute") and names it in its metadata:

    [project.entry-points."cookline.sources"]
    jsonl = "my_package:JSONL"          # a Component(kind="source")

`load()` registers every one it finds with the built-ins, so a pipeline using it is checked
like any other (by the gateway before a run starts, by `cookline validate` offline). It
imports the declarations only, never the implementations: those are the services' business.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from importlib import metadata

from cookline.spec.ops import OPS
from cookline.spec.params import Component, Registry
from cookline.spec.sources import SOURCES
from cookline.spec.train import MODELS_REGISTRY

log = logging.getLogger("cookline.plugins")

# Entry-point group -> the registry its components join.
GROUPS: dict[str, Registry] = {"cookline.sources": SOURCES, "cookline.ops": OPS, "cookline.models": MODELS_REGISTRY}


@dataclass(frozen=True)
class Loaded:
    """One entry point found: what it registered, or why it could not."""

    kind: str
    name: str
    distribution: str
    version: str
    error: str = ""
    params: tuple[str, ...] = ()


_lock = threading.Lock()
_loaded: list[Loaded] | None = None


def load() -> list[Loaded]:
    """Registers every plugin component of the installed distributions (once per process)."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = [
                _register(group, registry, ep)
                for group, registry in GROUPS.items()
                for ep in metadata.entry_points(group=group)
            ]
        return list(_loaded)


def _register(group: str, registry: Registry, ep: metadata.EntryPoint) -> Loaded:
    dist = ep.dist.name if ep.dist is not None else ""
    version = ep.dist.version if ep.dist is not None else ""
    try:
        component = ep.load()
        if not isinstance(component, Component):
            raise TypeError(f"{ep.value} is a {type(component).__name__}, not a cookline.spec.Component")
        if component.kind != registry.kind:
            raise TypeError(f"{ep.value} is a {component.kind}, but {group} holds {registry.kind}s")
        if component.name != ep.name:
            raise TypeError(f"the entry point is named {ep.name!r} but the component {component.name!r}")
        if component.name in registry:
            raise ValueError(f"a {registry.kind} named {component.name!r} is already registered")
        if not component.implementation:
            raise ValueError(f"{ep.value} declares no implementation ('module:attribute')")
        registry.register(dataclasses.replace(component, plugin=dist or "unknown"))
        return Loaded(registry.kind, ep.name, dist, version, params=tuple(p.name for p in component.params))
    except Exception as exc:  # a broken plugin is reported, never fatal
        log.warning("plugin %s (%s) not loaded: %s", ep.name, dist, exc)
        return Loaded(registry.kind, ep.name, dist, version, error=f"{type(exc).__name__}: {exc}")


def used_by(pipeline) -> list[tuple[str, str, tuple[str, ...]]]:
    """(kind, name, services that run it) of every plugin component a PipelineSpec names.

    A source runs in collect; an op in process, and in train (which builds its serving form
    into the exported model); a model family in train.
    """
    found: list[tuple[str, str, tuple[str, ...]]] = []
    fmt = pipeline.collect.format
    if fmt in SOURCES and SOURCES.get(fmt).plugin:
        found.append(("source", fmt, ("collect",)))
    for op in pipeline.process:
        if op.WhichOneof("kind") == "plugin" and op.plugin.name in OPS:
            found.append(("op", op.plugin.name, ("process", "train")))
    if pipeline.train.model in MODELS_REGISTRY and MODELS_REGISTRY.get(pipeline.train.model).plugin:
        found.append(("model", pipeline.train.model, ("train",)))
    return found
