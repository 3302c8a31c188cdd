"""RegistryService: the model registry over models/ in the object store.

A version exists while its cookline.json (a ModelRecord, read through
services/common/layout.py) does; deleting a version removes that file first, so the
version disappears in one step, then the rest of its files, its claim last. Deploying and
undeploying reach every serve replica (gateway/replicas.py).
"""

from __future__ import annotations

import logging

import grpc

from cookline import config
from cookline.v1 import records_pb2, registry_pb2, registry_pb2_grpc
from gateway import replicas
from services.common import layout
from services.common.errors import Fail, invalid, not_found, rpc
from services.common.store import ObjectStore

log = logging.getLogger("cookline.registry")


def _version_info(record: records_pb2.ModelRecord, aliases: list[str], deployed: bool) -> registry_pb2.ModelVersionInfo:
    info = registry_pb2.ModelVersionInfo(
        version=record.version,
        created_at=record.created_at,
        metrics=record.metrics,
        aliases=sorted(aliases),
        deployed=deployed,
        formats=record.formats,
        class_names=record.class_names,
    )
    if record.HasField("evaluation"):
        info.evaluation.CopyFrom(record.evaluation)
    info.lineage.dataset.CopyFrom(record.dataset)
    info.lineage.run_id = record.run_id
    if record.HasField("pipeline"):
        info.lineage.pipeline.CopyFrom(record.pipeline)
    if record.HasField("base"):
        info.lineage.base.CopyFrom(record.base)
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
                record = layout.read_model_record(self.store, name, version)
            except Fail as exc:
                if exc.code != grpc.StatusCode.NOT_FOUND:
                    raise
                continue  # deleted meanwhile
            named = [a for a, v in aliases.items() if v == version]
            model.versions.append(_version_info(record, named, version == deployed))
        return model

    def _based_on(self, name: str, version: int) -> list[str]:
        """The model versions ("NAME:VERSION") whose lineage names `name` version `version` as their base."""
        found = []
        for other in sorted(n for n in self.store.list_dirs("models/") if layout.NAME_RE.fullmatch(n)):
            for number in layout.model_versions(self.store, other):
                try:
                    base = layout.read_model_record(self.store, other, number).base
                except Fail:  # deleted meanwhile
                    continue
                if base.model == name and base.version == version:
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
        layout.read_model_record(self.store, name, version)  # NOT_FOUND unless published
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
        layout.delete_model_version(self.store, name, version)
        log.info("model %s version %d deleted", name, version)
        return registry_pb2.DeleteModelVersionResponse(model=self._model(name))

    @rpc
    def DeployModel(self, request, context) -> registry_pb2.DeployModelResponse:
        return replicas.deploy(self.store, request)

    @rpc
    def UndeployModel(self, request, context) -> registry_pb2.UndeployModelResponse:
        return replicas.undeploy(self.store, request.name)

    @rpc
    def SweepAbandonedVersions(self, request, context) -> registry_pb2.SweepAbandonedVersionsResponse:
        seconds = (
            request.older_than_seconds
            if request.HasField("older_than_seconds")
            else int(config.abandoned_version_seconds())
        )
        found = layout.sweep_abandoned_versions(self.store, seconds, dry_run=request.dry_run)
        return registry_pb2.SweepAbandonedVersionsResponse(
            older_than_seconds=seconds,
            versions=[
                registry_pb2.AbandonedVersion(
                    name=a.name, version=a.version, files=a.files, bytes=a.bytes, idle_seconds=int(a.idle_seconds)
                )
                for a in found
            ],
        )
