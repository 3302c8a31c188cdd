"""RegistryService: the model registry over models/ in the object store.

A version exists while its cookline.json does; deleting a version removes that
file first, so the version disappears in one step, then the rest of its files.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import json_format

from cookline.v1 import data_pb2, registry_pb2, registry_pb2_grpc
from services.common import layout
from services.common.errors import Fail, invalid, not_found, rpc
from services.common.store import ObjectStore

log = logging.getLogger("cookline.registry")


def _version_info(meta: dict, aliases: list[str], deployed: bool) -> registry_pb2.ModelVersionInfo:
    info = registry_pb2.ModelVersionInfo(
        version=int(meta["version"]),
        created_at=meta.get("created_at", ""),
        metrics={k: float(v) for k, v in (meta.get("metrics") or {}).items()},
        aliases=sorted(aliases),
        deployed=deployed,
        formats=meta.get("formats", ["saved_model"]),
        class_names=meta.get("class_names", []),
    )
    if meta.get("evaluation"):
        json_format.ParseDict(meta["evaluation"], info.evaluation, ignore_unknown_fields=True)
    dataset = meta.get("dataset") or {}
    info.lineage.dataset.CopyFrom(data_pb2.DatasetRef(name=dataset.get("name", ""), version=dataset.get("version", "")))
    info.lineage.run_id = meta.get("run_id", "")
    if meta.get("pipeline"):
        json_format.ParseDict(meta["pipeline"], info.lineage.pipeline, ignore_unknown_fields=True)
    return info


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, store: ObjectStore):
        self.store = store

    def _model(self, name: str) -> registry_pb2.ModelInfo:
        layout.check_name("name", name)
        aliases = layout.aliases(self.store, name)
        deployed = layout.deployed_version(self.store, name)
        model = registry_pb2.ModelInfo(name=name, aliases=aliases, deployed_version=deployed)
        for version in layout.model_versions(self.store, name):
            try:
                meta = layout.read_model_metadata(self.store, name, version)
            except Fail as exc:
                if exc.code != grpc.StatusCode.NOT_FOUND:
                    raise
                continue  # deleted meanwhile
            named = [a for a, v in aliases.items() if v == version]
            model.versions.append(_version_info(meta, named, version == deployed))
        return model

    def _based_on(self, name: str, version: int) -> list[str]:
        """The model versions ("NAME:VERSION") whose lineage names `name` version `version` as their base."""
        found = []
        for other in sorted(n for n in self.store.list_dirs("models/") if layout.NAME_RE.fullmatch(n)):
            for number in layout.model_versions(self.store, other):
                try:
                    base = layout.read_model_metadata(self.store, other, number).get("base") or {}
                except Fail:  # deleted meanwhile
                    continue
                if base.get("model") == name and int(base.get("version") or 0) == version:
                    found.append(f"{other}:{number}")
        return found

    @rpc
    def ListModels(self, request, context) -> registry_pb2.ListModelsResponse:
        names = [n for n in self.store.list_dirs("models/") if layout.NAME_RE.fullmatch(n)]
        models = [self._model(n) for n in sorted(names)]
        return registry_pb2.ListModelsResponse(models=[m for m in models if m.versions])

    @rpc
    def GetModel(self, request, context) -> registry_pb2.GetModelResponse:
        model = self._model(request.name)
        if not model.versions:
            raise not_found(f"model {request.name!r} not found")
        return registry_pb2.GetModelResponse(model=model)

    @rpc
    def SetAlias(self, request, context) -> registry_pb2.SetAliasResponse:
        layout.check_name("name", request.name)
        if request.version < 1:
            raise invalid(f"version: {request.version} is not a version (from 1)")
        layout.write_alias(self.store, request.name, request.alias, int(request.version))
        log.info("alias %s of %s -> version %d", request.alias, request.name, request.version)
        return registry_pb2.SetAliasResponse(model=self._model(request.name))

    @rpc
    def DeleteModelVersion(self, request, context) -> registry_pb2.DeleteModelVersionResponse:
        name, version = layout.check_name("name", request.name), int(request.version)
        if version < 1:
            raise invalid(f"version: {version} is not a version (from 1)")
        layout.read_model_metadata(self.store, name, version)  # NOT_FOUND unless published
        if layout.deployed_version(self.store, name) == version:
            raise Fail(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model {name!r} version {version} is deployed; deploy another version or unload it first",
            )
        naming = sorted(a for a, v in layout.aliases(self.store, name).items() if v == version)
        if naming:
            raise Fail(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model {name!r} version {version} is named by alias {', '.join(naming)}; move the alias first",
            )
        dependents = [] if request.force else self._based_on(name, version)
        if dependents:
            raise Fail(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model {name!r} version {version} is the base (train.base) of {', '.join(dependents)}; "
                "delete those first, or set force to delete it anyway (their lineage keeps naming it)",
            )
        prefix = layout.model_prefix(name, version)
        self.store.delete(prefix + layout.MODEL_METADATA)  # the version is gone from here on
        self.store.delete_prefix(prefix)
        log.info("model %s version %d deleted", name, version)
        return registry_pb2.DeleteModelVersionResponse(model=self._model(name))
