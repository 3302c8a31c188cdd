"""Publishing model versions (services/common/layout.py: claim_model_version, publish_model) on the
local store and on S3 (SeaweedFS): publishers racing for one version number each end with a
version of their own, every published version keeps exactly the files its record lists (their
sha256 verify), a publisher that fails cleans up only what it wrote, and the files of a publish that
died (a claim with no record, idle for longer than the sweep's age) are swept while published and
recent ones are kept."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import json_format

from cookline.v1 import records_pb2
from services.common import layout
from services.common.errors import Fail
from services.common.store import LocalStore, ObjectStore, S3Store

PUBLISHERS = 3


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path, s3_server):
    """A function opening a new client of one store (each publisher has its own, as train replicas do)."""
    if request.param == "local":
        root = str(tmp_path / "store")
        return lambda: LocalStore(root)
    from helpers import unique_bucket

    bucket = unique_bucket("pub")
    return lambda: S3Store(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, bucket)


def listing_together(store: ObjectStore, barrier: threading.Barrier) -> ObjectStore:
    """`store`, whose first listing of models/ returns only once every publisher has listed: they all
    see the same versions and so all go for the same next number (the race the claim must settle)."""
    real, first = store.list, [True]

    def list_(prefix):
        keys = list(real(prefix))
        if first[0] and prefix.startswith("models/"):
            first[0] = False
            barrier.wait(timeout=120)
        return iter(keys)

    store.list = list_  # type: ignore[method-assign]
    return store


def model_files(who: int) -> dict[str, bytes]:
    """A publisher's own files: same names as every other publisher's, different bytes."""
    return {
        "saved_model.pb": os.urandom(64 * 1024),
        "variables/variables.data-00000-of-00001": os.urandom(512 * 1024) + bytes([who]),
        "variables/variables.index": f"index of publisher {who}".encode(),
    }


def publish(store: ObjectStore, who: int, files: dict[str, bytes]) -> int:
    """What train's publish step does: claim a number, write the files, the record last."""
    record = records_pb2.ModelRecord(run_id=f"run-{who}", class_names=["a", "b"])
    with layout.claim_model_version(store, "raced", f"run-{who}") as claim:
        return layout.publish_model(store, claim, record, files)


def check_published(store: ObjectStore, written: dict[str, dict[str, bytes]], tmp_path) -> dict[str, int]:
    """Every published version holds exactly its publisher's files, verified against its record."""
    versions = {}
    for version in layout.model_versions(store, "raced"):
        record = layout.read_model_record(store, "raced", version)
        files = written[record.run_id]
        folder = tmp_path / f"v{version}"
        layout.download_model(store, record, layout.model_prefix("raced", version), str(folder))  # checks sha256
        assert sorted(record.checksums) == sorted(files)
        for name, data in files.items():
            assert (folder / name).read_bytes() == data, f"version {version}: {name} is not what {record.run_id} wrote"
        claim = records_pb2.ModelClaim()
        json_format.Parse(store.get_bytes(layout.model_prefix("raced", version) + layout.MODEL_CLAIM), claim)
        assert claim.run_id == record.run_id  # the claim belongs to the publisher of the version
        versions[record.run_id] = version
    return versions


def test_concurrent_publishers_each_get_their_own_intact_version(backend, tmp_path):
    barrier = threading.Barrier(PUBLISHERS)
    written = {f"run-{who}": model_files(who) for who in range(PUBLISHERS)}
    stores = [listing_together(backend(), barrier) for _ in range(PUBLISHERS)]
    with ThreadPoolExecutor(PUBLISHERS) as pool:
        futures = [pool.submit(publish, stores[who], who, written[f"run-{who}"]) for who in range(PUBLISHERS)]
        outcomes = {f"run-{who}": f.exception(timeout=300) or f.result() for who, f in enumerate(futures)}
    store = backend()
    published = check_published(store, written, tmp_path)  # first: what was published is intact
    assert outcomes == published  # every publisher got a version of its own (none failed)
    assert sorted(published.values()) == layout.model_versions(store, "raced") == list(range(1, PUBLISHERS + 1))


def test_a_failed_publish_removes_only_its_own_objects(backend, tmp_path):
    store = backend()
    loser = layout.claim_model_version(store, "raced", "run-0")
    winner = layout.claim_model_version(store, "raced", "run-1")
    assert (loser.version, winner.version) == (1, 2)
    written = {"run-1": model_files(1)}
    with winner:
        layout.publish_model(store, winner, records_pb2.ModelRecord(run_id="run-1"), written["run-1"])
    files: dict[str, str | bytes] = {**model_files(0), "variables/missing": str(tmp_path / "no-such-file")}
    with pytest.raises(FileNotFoundError), loser:  # fails half-way through its upload
        layout.publish_model(store, loser, records_pb2.ModelRecord(run_id="run-0"), files)
    assert list(store.list(layout.model_prefix("raced", 1))) == []  # its files and its claim are gone
    assert layout.model_versions(store, "raced") == [2]
    assert check_published(store, written, tmp_path) == {"run-1": 2}
    assert layout.claim_model_version(store, "raced").version == 3  # never a published number


def read_claim(store: ObjectStore, version: int) -> records_pb2.ModelClaim:
    claim = records_pb2.ModelClaim()
    json_format.Parse(store.get_bytes(layout.model_prefix("raced", version) + layout.MODEL_CLAIM), claim)
    return claim


def test_abandoned_versions_are_swept_and_published_or_recent_ones_kept(backend, tmp_path):
    store = backend()
    written = {"run-1": model_files(1)}
    assert publish(store, 1, written["run-1"]) == 1
    killed = layout.claim_model_version(store, "raced", "run-2")  # killed mid-upload: two files written
    partial = model_files(2)
    for name in ("saved_model.pb", "variables/variables.index"):
        store.put_bytes(killed.prefix + name, partial[name])
    layout.claim_model_version(store, "raced", "run-3")  # killed before its first file: the claim alone
    now = time.time()

    assert layout.sweep_abandoned_versions(store, 3600, at=now) == []  # written just now: in progress
    later = now + 7200
    dry = layout.sweep_abandoned_versions(store, 3600, dry_run=True, at=later)
    size = len(partial["saved_model.pb"]) + len(partial["variables/variables.index"])
    assert [(a.version, a.files, a.bytes) for a in dry] == [(2, 2, size), (3, 0, 0)]
    assert len(list(store.list(killed.prefix))) == 3  # a dry run changes nothing

    swept = layout.sweep_abandoned_versions(store, 3600, at=later)
    assert [(a.version, a.files) for a in swept] == [(2, 2), (3, 0)]
    for version, run_id in ((2, "run-2"), (3, "run-3")):
        assert list(store.list(layout.model_prefix("raced", version))) == [
            layout.model_prefix("raced", version) + layout.MODEL_CLAIM
        ]
        claim = read_claim(store, version)
        assert claim.run_id == run_id and claim.token == "" and claim.abandoned_at
    assert check_published(store, written, tmp_path) == {"run-1": 1}  # untouched, its sha256 verify
    assert layout.sweep_abandoned_versions(store, 3600, at=later) == []  # swept once
    assert layout.claim_model_version(store, "raced").version == 4  # swept numbers stay skipped


def test_a_stalled_publisher_cannot_publish_into_a_swept_version(backend, tmp_path):
    store = backend()
    stalled = layout.claim_model_version(store, "raced", "run-1")
    swept = layout.sweep_abandoned_versions(store, 0)  # age 0: even a publish in progress
    assert [a.version for a in swept] == [1]
    with pytest.raises(Fail) as failed, stalled:  # it wakes up and publishes
        layout.publish_model(store, stalled, records_pb2.ModelRecord(run_id="run-1"), model_files(1))
    assert failed.value.code == grpc.StatusCode.ABORTED and "swept as abandoned" in failed.value.message
    # its files were undone, and its release left the sweeper's claim: the number stays skipped
    assert list(store.list(stalled.prefix)) == [stalled.prefix + layout.MODEL_CLAIM]
    assert read_claim(store, 1).abandoned_at
    assert layout.model_versions(store, "raced") == []
