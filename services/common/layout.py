"""The storage layout (docs/api.md, "Storage layout"), in one place: object keys, names, manifests.

datasets/<name>/<version>/manifest.json   (written last; each shard's "sha256")
datasets/<name>/<version>/shard-00000-<attempt>.npz
models/<name>/<version>/claim.json (first), saved_model.pb, variables/..., cookline.json (last; "checksums")
runs/<run-id>/run.json, runs/<run-id>/events.jsonl
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import re
import time
from collections.abc import Mapping

import grpc
from google.protobuf import json_format

from cookline.spec.names import NAME_RE, check_name
from cookline.v1 import data_pb2, records_pb2
from services.common.errors import Fail, invalid, not_found
from services.common.store import AlreadyExistsError, ChecksumError, NotFoundError, ObjectStore, sha256_of

log = logging.getLogger("cookline.store")

DATASET_MANIFEST = "manifest.json"
MODEL_METADATA = "cookline.json"


def now(at: float | None = None) -> str:
    """The current time (or `at`, seconds since the epoch), RFC 3339 UTC."""
    moment = _dt.datetime.now(_dt.UTC) if at is None else _dt.datetime.fromtimestamp(at, _dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


def dataset_counts(manifest: dict) -> data_pb2.DatasetInfo:
    """The DatasetInfo of a manifest with only what its subsets' row counts need (num_rows,
    predefined_split, statistics.split_counts; splits.subset_rows). A read parses this instead of
    the whole: the per-column statistics of a 784-column dataset took ~30 ms on every stream."""
    slim = {k: v for k, v in manifest.items() if k not in ("statistics", "fields", "shards")}
    statistics = manifest.get("statistics") or {}
    slim["statistics"] = {k: v for k, v in statistics.items() if k in ("split_counts", "splitCounts")}
    return dataset_info(slim)


# --- models -----------------------------------------------------------------
#
#   models/<name>/<version>/claim.json      a ModelClaim, written create-only FIRST: one publisher per version
#   models/<name>/<version>/...              the SavedModel (and tfjs/) files
#   models/<name>/<version>/cookline.json   a ModelRecord, written create-only LAST: the version exists
#
# Both records are in protos/cookline/v1/records.proto.

CHECKSUMS = "checksums"
MODEL_CLAIM = "claim.json"
# The raw inputs a model may take (ModelInputs' fields, in signature order) and the kind each holds.
INPUT_KINDS = {"features": "numeric", "categorical": "category", "text": "text", "image": "image"}
IMAGE_ENCODINGS = ("png", "jpeg", "gif", "bmp")
# How many version numbers a publisher tries before giving up (each one lost went to another publisher).
CLAIM_TRIES = 32


def checksums(files) -> dict[str, str]:
    """The "checksums" of a model record: each file's path in the version folder -> hex sha256.

    `files` is what store.publish takes (name -> local path or bytes); publish_model records the
    result in cookline.json, which it writes last.
    """
    return {name: sha256_of(src) for name, src in sorted(files.items())}


def download_model(store: ObjectStore, record: records_pb2.ModelRecord, prefix: str, folder: str) -> None:
    """Copies a published model version into `folder`, verifying each file against the record.

    A record with checksums gets exactly the files it lists, each hashed while it downloads
    (ChecksumError names the first one that differs; a listed file that is missing is data loss too).
    A record without them (written before checksums existed) gets every file of the version,
    unverified.
    """
    if not record.checksums:
        for key in store.list(prefix):
            store.get_file(key, os.path.join(folder, *key[len(prefix) :].split("/")))
        return
    for name, sha256 in sorted(record.checksums.items()):
        try:
            store.get_file(prefix + name, os.path.join(folder, *name.split("/")), sha256=sha256)
        except NotFoundError:
            raise ChecksumError(f"object {prefix + name} is missing: the model record lists it") from None


def model_versions(store: ObjectStore, name: str, published_only: bool = True) -> list[int]:
    """Integer versions of a model, ascending; only published ones unless asked (then also versions
    claimed or being written, and abandoned ones: numbers a new version must not take)."""
    versions = sorted(int(v) for v in store.list_dirs(f"models/{name}/") if v.isdigit())
    if published_only:
        versions = [v for v in versions if store.exists(model_prefix(name, v) + MODEL_METADATA)]
    return versions


def _json_dict(message) -> dict:
    """A record as JSON: proto field names, every top-level field present (an empty one as its
    JSON default, an unset message as null) in field order, nested messages as json_format writes them."""
    have = json_format.MessageToDict(message, preserving_proto_field_name=True)
    empty = json_format.MessageToDict(
        type(message)(), preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return {f.name: have.get(f.name, empty.get(f.name)) for f in message.DESCRIPTOR.fields}


def model_record_json(record: records_pb2.ModelRecord) -> bytes:
    """The bytes of cookline.json for `record`."""
    return json.dumps(_json_dict(record), indent=1).encode()


def parse_model_record(data: bytes | str | dict) -> records_pb2.ModelRecord:
    """A cookline.json (bytes, text or an already-decoded dict) as a ModelRecord, with the gaps of
    records written by older versions filled as records.proto documents: inputs without kind or
    dtype, "features" without columns, images without encodings, no formats, task or outputs.
    Unknown fields are ignored; a null is an empty field (old records wrote "checksums": null)."""
    raw = json.loads(data) if isinstance(data, (bytes, str)) else data
    record = json_format.ParseDict(raw, records_pb2.ModelRecord(), ignore_unknown_fields=True)
    for name, kind in INPUT_KINDS.items():
        if not record.inputs.HasField(name):
            continue
        spec = getattr(record.inputs, name)
        spec.kind = spec.kind or kind
        spec.dtype = spec.dtype or ("float32" if spec.kind == "numeric" else "string")
        if name == "features" and not spec.columns:
            spec.columns.extend(record.feature_columns)
        if spec.kind == "image" and not spec.encodings:
            spec.encodings.extend(IMAGE_ENCODINGS)
    if not record.formats:
        record.formats.append("saved_model")
    if not record.task:
        record.task = "classification" if record.class_names else "regression"
    if not record.HasField("outputs"):
        record.outputs.scores.CopyFrom(
            records_pb2.OutputRecord(dtype="float32", shape=[-1, len(record.class_names) or 1])
        )
        if record.class_names:
            record.outputs.label.CopyFrom(records_pb2.OutputRecord(dtype="string", shape=[-1]))
    return record


def read_model_record(store: ObjectStore, name: str, version: int) -> records_pb2.ModelRecord:
    """The record (cookline.json) of a published model version, newest when version is 0; NOT_FOUND
    if absent. The one reader of model records: old records load with their gaps filled
    (parse_model_record)."""
    check_name("model.name", name)
    if version < 0:
        raise invalid(f"model.version: {version} is negative")
    if version == 0:
        versions = model_versions(store, name)
        if not versions:
            raise not_found(f"model {name!r} not found")
        version = versions[-1]
    try:
        return parse_model_record(store.get_bytes(model_prefix(name, version) + MODEL_METADATA))
    except NotFoundError:
        raise not_found(f"model {name!r} version {version} not found") from None


def base_version(store: ObjectStore, name: str, version: int = 0, alias: str = "") -> int:
    """The published version a train.base names (NAME:VERSION, NAME@ALIAS or NAME: the newest);
    NOT_FOUND naming train.base when there is none."""
    check_name("train.base", name)
    try:
        if alias:
            version = read_alias(store, name, alias)
        return read_model_record(store, name, version).version
    except Fail as exc:
        if exc.code != grpc.StatusCode.NOT_FOUND:
            raise
        raise not_found(f"train.base: {exc.message}; it names no published model version") from None


class VersionClaim:
    """A model version number this publisher owns (claim_model_version): no other publisher writes
    under its prefix. Used as a context manager: leaving it by an exception releases the claim
    (unless the version got published), so an abandoned number does not stay taken."""

    def __init__(self, store: ObjectStore, name: str, version: int, claim: records_pb2.ModelClaim):
        self.store, self.name, self.version, self.claim = store, name, version, claim
        self.prefix = model_prefix(name, version)

    def __enter__(self) -> VersionClaim:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.release()

    def still_ours(self) -> None:
        """ABORTED unless claim.json still holds this claim's token: a sweep found the version
        abandoned (nothing written for longer than its age) and rewrote the claim, so this publisher
        must not publish into the folder it cleaned (publish_model checks it before cookline.json)."""
        stored = _get_or_none(self.store, self.prefix + MODEL_CLAIM)
        found = records_pb2.ModelClaim()
        if stored is not None:
            json_format.Parse(stored, found, ignore_unknown_fields=True)
        if found.token != self.claim.token:
            raise Fail(
                grpc.StatusCode.ABORTED,
                f"model {self.name!r} version {self.version}: the claim was swept as abandoned "
                f"({found.abandoned_at or 'claim gone'}) while this publish stalled; train again",
            )

    def release(self) -> None:
        """Deletes the claim of a version that was not published, if it is still this one's (best
        effort: a claim left behind only makes its number skipped)."""
        try:
            if not self.store.exists(self.prefix + MODEL_METADATA):
                self.still_ours()
                self.store.delete(self.prefix + MODEL_CLAIM)
        except Fail:  # swept meanwhile: the sweeper's claim keeps the number
            pass
        except Exception:  # best effort: the error that ended the publish matters more
            log.warning("could not release the claim of model %s version %d", self.name, self.version)


def claim_model_version(store: ObjectStore, name: str, run_id: str = "") -> VersionClaim:
    """Claims the next free version number of model `name`: its claim.json written create-only
    (store.put_new), so of publishers racing for one number exactly one wins; the others take the
    next number. ABORTED after CLAIM_TRIES numbers lost (as many other publishers at once)."""
    check_name("model.name", name)
    claim = records_pb2.ModelClaim(run_id=run_id, token=os.urandom(16).hex(), claimed_at=now())
    data = json_format.MessageToJson(claim, preserving_proto_field_name=True, indent=1).encode()
    version = 0
    for _ in range(CLAIM_TRIES):
        existing = model_versions(store, name, published_only=False)
        version = max(version, existing[-1] if existing else 0) + 1  # never a number already lost
        key = model_prefix(name, version) + MODEL_CLAIM
        try:
            store.put_new(key, data)
        except AlreadyExistsError:
            if _get_or_none(store, key) != data:  # not our own write retried after a lost response
                continue
        if store.exists(model_prefix(name, version) + MODEL_METADATA):
            # published without a claim (by a version of cookline before claims): not ours to write
            store.delete(key)
            continue
        return VersionClaim(store, name, version, claim)
    raise Fail(
        grpc.StatusCode.ABORTED,
        f"model {name!r}: could not claim a version number in {CLAIM_TRIES} tries; "
        "other publishers of this model took each one",
    )


def _get_or_none(store: ObjectStore, key: str) -> bytes | None:
    try:
        return store.get_bytes(key)
    except NotFoundError:
        return None


def publish_model(
    store: ObjectStore, claim: VersionClaim, record: records_pb2.ModelRecord, files: Mapping[str, str | bytes]
) -> int:
    """Publishes the claimed version: `files` (path in the version folder -> local path or bytes),
    then `record` as cookline.json LAST, create-only, with its name, version, created_at and the
    files' checksums filled in. Returns the version. On failure the files written are removed
    (store.publish); the claim guarantees they were nobody else's."""
    if MODEL_CLAIM in files:
        raise ValueError(f"{MODEL_CLAIM} is the version's claim, not a model file")
    record.name, record.version, record.created_at = claim.name, claim.version, now()
    record.checksums.clear()
    record.checksums.update(checksums(files))
    store.publish(claim.prefix, files, MODEL_METADATA, model_record_json(record), before_manifest=claim.still_ours)
    return claim.version


@dataclasses.dataclass
class Abandoned:
    """An unpublished model version found by sweep_abandoned_versions."""

    name: str
    version: int
    files: int  # deleted (or to be), the claim not counted
    bytes: int
    idle_seconds: float  # since the newest of its objects was written


def sweep_abandoned_versions(
    store: ObjectStore, older_than_s: float, dry_run: bool = False, at: float | None = None
) -> list[Abandoned]:
    """Deletes the files of every model version folder that has no cookline.json and in which
    nothing was written for `older_than_s` seconds (at `at`, seconds since the epoch; default now). In progress is told
    apart by that idle time: a publisher writes its claim, then its files one by one, each refreshing
    the folder's newest write; a killed one writes nothing more. The claim is rewritten first, as
    abandoned and without its token, so a publisher that was only stalled fails its check before
    cookline.json (VersionClaim.still_ours) instead of publishing into the cleaned folder; it stays,
    so the number is never reused. Folders already swept (the abandoned claim alone) are skipped;
    published versions are never touched."""
    if older_than_s < 0:
        raise invalid(f"older_than_seconds: {older_than_s} is negative")
    at = time.time() if at is None else at
    found = []
    for name in sorted(n for n in store.list_dirs("models/") if NAME_RE.fullmatch(n)):
        for version in model_versions(store, name, published_only=False):
            prefix = model_prefix(name, version)
            if store.exists(prefix + MODEL_METADATA):
                continue  # published: never touched
            keys = list(store.list(prefix))
            if prefix + MODEL_METADATA in keys or not keys:
                continue
            claim = records_pb2.ModelClaim()
            stored = _get_or_none(store, prefix + MODEL_CLAIM)
            if stored is not None:
                json_format.Parse(stored, claim, ignore_unknown_fields=True)
            files = [k for k in keys if k != prefix + MODEL_CLAIM]
            if claim.abandoned_at and not files:
                continue  # swept before
            stats = {}
            for key in keys:
                try:
                    stats[key] = store.stat(key)
                except NotFoundError:  # deleted meanwhile (a failed publish cleaning up)
                    continue
            if not stats:
                continue
            idle = at - max(s.modified for s in stats.values())
            if idle < older_than_s:
                continue  # written to recently: a publish in progress
            size = sum(stats[k].size for k in files if k in stats)
            found.append(Abandoned(name, version, len(files), size, idle))
            if dry_run:
                continue
            claim.token, claim.abandoned_at = "", now(at)
            store.put_bytes(
                prefix + MODEL_CLAIM,
                json_format.MessageToJson(claim, preserving_proto_field_name=True, indent=1).encode(),
            )
            if store.exists(prefix + MODEL_METADATA):  # published after all, just now: keep it whole
                if stored is not None:
                    store.put_bytes(prefix + MODEL_CLAIM, stored)
                found.pop()
                continue
            for key in files:
                store.delete(key)
            log.info(
                "model %s version %d: abandoned publish swept (%d files, idle %.0f s)", name, version, len(files), idle
            )
    return found


def delete_model_version(store: ObjectStore, name: str, version: int) -> None:
    """Deletes a version: cookline.json first (the version is gone from then on), then its files,
    then its claim last, so no other publisher can claim the number while files of this one remain."""
    prefix = model_prefix(name, version)
    store.delete(prefix + MODEL_METADATA)
    for key in list(store.list(prefix)):
        if key != prefix + MODEL_CLAIM:
            store.delete(key)
    store.delete(prefix + MODEL_CLAIM)


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
    read_model_record(store, name, version)  # NOT_FOUND unless published
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
