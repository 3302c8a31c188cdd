"""The storage layout (docs/api.md, "Storage layout"), in one place: object keys, names, manifests.

datasets/<name>/<version>/manifest.json   (written last; each shard's "sha256")
datasets/<name>/<version>/shard-00000-<attempt>.npz
models/<name>/<version>/saved_model.pb, variables/..., cookline.json (last; "checksums": file -> sha256)
runs/<run-id>/run.json, runs/<run-id>/events.jsonl
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re

import grpc
from google.protobuf import json_format

from cookline.spec.names import NAME_RE, check_name
from cookline.v1 import data_pb2, records_pb2
from services.common.errors import Fail, invalid, not_found
from services.common.store import ChecksumError, NotFoundError, ObjectStore, sha256_of

DATASET_MANIFEST = "manifest.json"
MODEL_METADATA = "cookline.json"


def now() -> str:
    """The current time, RFC 3339 UTC."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dataset_prefix(name: str, version: str) -> str:
    return f"datasets/{name}/{version}/"


def model_prefix(name: str, version: int) -> str:
    return f"models/{name}/{version}/"


def run_prefix(run_id: str) -> str:
    return f"runs/{run_id}/"


# --- datasets ---------------------------------------------------------------


def read_manifest(store: ObjectStore, ref: data_pb2.DatasetRef) -> dict:
    """The manifest of a dataset version (newest when ref.version is empty).

    Raises NOT_FOUND when the dataset or version has no published manifest.
    """
    check_name("dataset.name", ref.name)
    version = ref.version or newest_dataset_version(store, ref.name)
    if not re.fullmatch(r"[0-9a-f]{1,64}", version):
        raise invalid(f"dataset.version: {version!r} is not a version id")
    try:
        return json.loads(store.get_bytes(dataset_prefix(ref.name, version) + DATASET_MANIFEST))
    except NotFoundError:
        raise not_found(f"dataset {ref.name!r} version {version!r} not found") from None


def newest_dataset_version(store: ObjectStore, name: str) -> str:
    """The most recently published version of a dataset; NOT_FOUND if none."""
    newest = None
    for version in store.list_dirs(f"datasets/{name}/"):
        try:
            created = json.loads(store.get_bytes(dataset_prefix(name, version) + DATASET_MANIFEST))["created_at"]
        except NotFoundError:
            continue  # unpublished (being written or abandoned): invisible
        if newest is None or created > newest[0]:
            newest = (created, version)
    if newest is None:
        raise not_found(f"dataset {name!r} not found")
    return newest[1]


def dataset_info(manifest: dict) -> data_pb2.DatasetInfo:
    """The DatasetInfo part of a manifest (the manifest is a DatasetInfo + shards)."""
    return json_format.ParseDict(manifest, data_pb2.DatasetInfo(), ignore_unknown_fields=True)


# --- models -----------------------------------------------------------------

CHECKSUMS = "checksums"


def checksums(files) -> dict[str, str]:
    """The "checksums" of a model record: each file's path in the version folder -> hex sha256.

    `files` is what store.publish takes (name -> local path or bytes); train records the result in
    cookline.json, which publish writes last.
    """
    return {name: sha256_of(src) for name, src in sorted(files.items())}


def download_model(store: ObjectStore, meta: dict, prefix: str, folder: str) -> None:
    """Copies a published model version into `folder`, verifying each file against the record.

    A record with "checksums" gets exactly the files it lists, each hashed while it downloads
    (ChecksumError names the first one that differs; a listed file that is missing is data loss too).
    A record without them (written before checksums existed) gets every file of the version,
    unverified.
    """
    recorded = meta.get(CHECKSUMS)
    if recorded is None:
        for key in store.list(prefix):
            store.get_file(key, os.path.join(folder, *key[len(prefix) :].split("/")))
        return
    for name, sha256 in sorted(recorded.items()):
        try:
            store.get_file(prefix + name, os.path.join(folder, *name.split("/")), sha256=sha256)
        except NotFoundError:
            raise ChecksumError(f"object {prefix + name} is missing: the model record lists it") from None


def model_versions(store: ObjectStore, name: str, published_only: bool = True) -> list[int]:
    """Integer versions of a model, ascending; only published ones unless asked."""
    versions = sorted(int(v) for v in store.list_dirs(f"models/{name}/") if v.isdigit())
    if published_only:
        versions = [v for v in versions if store.exists(model_prefix(name, v) + MODEL_METADATA)]
    return versions


def read_model_metadata(store: ObjectStore, name: str, version: int) -> dict:
    """cookline.json of a model version (newest when version is 0); NOT_FOUND if absent."""
    check_name("model.name", name)
    if version < 0:
        raise invalid(f"model.version: {version} is negative")
    if version == 0:
        versions = model_versions(store, name)
        if not versions:
            raise not_found(f"model {name!r} not found")
        version = versions[-1]
    try:
        return json.loads(store.get_bytes(model_prefix(name, version) + MODEL_METADATA))
    except NotFoundError:
        raise not_found(f"model {name!r} version {version} not found") from None


def base_version(store: ObjectStore, name: str, version: int = 0, alias: str = "") -> int:
    """The published version a train.base names (NAME:VERSION, NAME@ALIAS or NAME: the newest);
    NOT_FOUND naming train.base when there is none."""
    check_name("train.base", name)
    try:
        if alias:
            version = read_alias(store, name, alias)
        return int(read_model_metadata(store, name, version)["version"])
    except Fail as exc:
        if exc.code != grpc.StatusCode.NOT_FOUND:
            raise
        raise not_found(f"train.base: {exc.message}; it names no published model version") from None


# --- model serving state ---------------------------------------------------
#
#   models/<name>/deployed.json          a DeployedRecord (protos/cookline/v1/records.proto)
#   models/<name>/aliases/<alias>.json   an AliasRecord
#
# Neither sits inside a version folder, so versions stay immutable. Each is one
# object written in one put, so a reader sees the old or the new state, never half.
# Records are protobuf JSON (proto field names); unknown fields are ignored on read, and
# the records of earlier versions (plain JSON with the same names) load unchanged.


def _write_record(store: ObjectStore, key: str, record) -> None:
    record.updated_at = now()
    store.put_bytes(key, json_format.MessageToJson(record, preserving_proto_field_name=True, indent=1).encode())


def _read_record(store: ObjectStore, key: str, message):
    """The record at `key` parsed into `message`; NotFoundError when there is none."""
    return json_format.Parse(store.get_bytes(key), message, ignore_unknown_fields=True)


DEPLOYED = "deployed.json"


def deployed_key(name: str) -> str:
    return f"models/{name}/{DEPLOYED}"


def alias_key(name: str, alias: str) -> str:
    return f"models/{name}/aliases/{alias}.json"


def write_deployed(store: ObjectStore, name: str, record: records_pb2.DeployedRecord) -> None:
    """Marks what serve replicas should serve for `name` (their desired state)."""
    _write_record(store, deployed_key(name), record)


def read_deployed(store: ObjectStore, name: str) -> records_pb2.DeployedRecord | None:
    """The deployed record of a model, or None when it is not deployed."""
    try:
        return _read_record(store, deployed_key(name), records_pb2.DeployedRecord())
    except NotFoundError:
        return None


def delete_deployed(store: ObjectStore, name: str) -> None:
    store.delete(deployed_key(name))


def deployed_models(store: ObjectStore) -> list[str]:
    """Names of every model with a deployed marker."""
    return sorted(
        name for name in store.list_dirs("models/") if NAME_RE.fullmatch(name) and store.exists(deployed_key(name))
    )


def write_alias(store: ObjectStore, name: str, alias: str, version: int) -> None:
    """Points alias (e.g. "production") at a published version of a model."""
    check_name("alias", alias)
    read_model_metadata(store, name, version)  # NOT_FOUND unless published
    _write_record(store, alias_key(name, alias), records_pb2.AliasRecord(version=version))


def read_alias(store: ObjectStore, name: str, alias: str) -> int:
    """The version an alias names; NOT_FOUND if the alias does not exist."""
    check_name("alias", alias)
    try:
        return int(_read_record(store, alias_key(name, alias), records_pb2.AliasRecord()).version)
    except NotFoundError:
        raise not_found(f"alias {alias!r} of model {name!r} not found") from None


def deployed_version(store: ObjectStore, name: str) -> int:
    """The version serve replicas serve for `name` (as the marker recorded it); 0 if not deployed."""
    record = read_deployed(store, name)
    return int(record.version) if record else 0


def aliases(store: ObjectStore, name: str) -> dict[str, int]:
    """Every alias of a model and the version it names."""
    found = {}
    for key in store.list(f"models/{name}/aliases/"):
        alias = key.rsplit("/", 1)[-1].removesuffix(".json")
        try:
            found[alias] = int(_read_record(store, key, records_pb2.AliasRecord()).version)
        except NotFoundError:
            continue  # deleted while listing
    return found
