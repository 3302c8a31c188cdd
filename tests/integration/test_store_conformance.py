"""One behaviour suite for every ObjectStore backend: local directory and real S3 (SeaweedFS); the
local-only checks that need no server are tests/unit/test_local_store.py."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import unique_bucket
from s3server import SeaweedS3
from services.common.store import (
    AlreadyExistsError,
    NotFoundError,
    ObjectStore,
    S3Store,
    StoreError,
    StoreUnavailableError,
    store_from_env,
)

MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def store(request) -> ObjectStore:
    return request.getfixturevalue(request.param + "_store")


def _sha(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


# -- basic object operations ---------------------------------------------------------


def test_put_get_bytes_round_trip(store):
    data = bytes(range(256)) * 17
    store.put_bytes("runs/r1/run.json", data)
    assert store.get_bytes("runs/r1/run.json") == data
    assert store.exists("runs/r1/run.json")
    store.put_bytes("empty", b"")
    assert store.get_bytes("empty") == b""


def test_put_file_get_file(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(123_457))
    store.put_file("datasets/d/v1/shard-00000.npz", str(src))
    dst = tmp_path / "deep" / "nested" / "dst.bin"  # parent dirs are created
    store.get_file("datasets/d/v1/shard-00000.npz", str(dst))
    assert dst.read_bytes() == src.read_bytes()
    assert [p.name for p in dst.parent.iterdir()] == ["dst.bin"]  # no temp files left


def test_overwrite(store):
    store.put_bytes("k", b"first version, longer")
    store.put_bytes("k", b"second")
    assert store.get_bytes("k") == b"second"
    assert list(store.list("k")) == ["k"]


def test_list_prefix_is_recursive_sorted_and_exact(store):
    keys = ["a/b/1", "a/b/2/x", "a/bc", "a/b-c", "ab", "z"]
    for k in reversed(keys):
        store.put_bytes(k, k.encode())
    assert list(store.list("a/b/")) == ["a/b/1", "a/b/2/x"]
    assert list(store.list("a/b")) == ["a/b-c", "a/b/1", "a/b/2/x", "a/bc"]
    assert list(store.list("a/bc")) == ["a/bc"]
    assert list(store.list("")) == sorted(keys)
    assert list(store.list("nothing/")) == []


def test_list_dirs(store):
    for k in [
        "models/iris/1/saved_model.pb",
        "models/iris/2/variables/variables.index",
        "models/iris/10/cookline.json",
        "models/iris/notes.txt",
        "models/mnist/1/x",
    ]:
        store.put_bytes(k, b"x")
    assert store.list_dirs("models/iris/") == ["1", "10", "2"]
    assert store.list_dirs("models/") == ["iris", "mnist"]
    assert store.list_dirs("") == ["models"]
    assert store.list_dirs("models/none/") == []
    store.delete("models/iris/1/saved_model.pb")  # a folder with no objects is gone
    assert store.list_dirs("models/iris/") == ["10", "2"]


def test_stat_gives_size_and_time_of_last_write(store):
    before = time.time()
    store.put_bytes("models/m/1/a.bin", b"x" * 1234)
    found = store.stat("models/m/1/a.bin")
    assert found.size == 1234
    # S3 keeps whole seconds (Last-Modified), so the write may show up to 1 s before `before`
    assert before - 1 <= found.modified <= time.time()
    with pytest.raises(NotFoundError):
        store.stat("models/m/1/missing.bin")


def test_delete_and_delete_missing(store):
    store.put_bytes("a/x", b"1")
    store.delete("a/x")
    assert not store.exists("a/x")
    assert list(store.list("a/")) == []
    store.delete("a/x")  # missing key is not an error
    store.delete("never/was")


def test_delete_prefix(store):
    for k in ["a/b/1", "a/b/2/x", "a/bc", "c"]:
        store.put_bytes(k, b"v")
    store.delete_prefix("a/b/")
    assert list(store.list("")) == ["a/bc", "c"]
    store.delete_prefix("nothing/")
    store.delete_prefix("")
    assert list(store.list("")) == []


def test_missing_key(store, tmp_path):
    with pytest.raises(NotFoundError, match="no/such/key"):
        store.get_bytes("no/such/key")
    with pytest.raises(NotFoundError, match="no/such/key"):
        store.get_file("no/such/key", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert store.exists("no/such/key") is False
    store.put_bytes("dir/child", b"x")  # a "folder" is not an object
    assert store.exists("dir") is False
    with pytest.raises(NotFoundError):
        store.get_bytes("dir")


@pytest.mark.parametrize("key", ["../x", "a/../b", "/abs", "a\\b", "", "a//b", "a/./b", "a/"])
def test_invalid_keys_rejected(store, key):
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        store.get_bytes(key)


def test_large_object_round_trip(store, tmp_path):
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for _ in range(70):
            f.write(os.urandom(MiB))
    store.put_file("big/object.bin", str(src))
    dst = tmp_path / "out" / "big.bin"
    store.get_file("big/object.bin", str(dst))
    assert os.path.getsize(dst) == 70 * MiB
    assert _sha(dst) == _sha(src)
    if isinstance(store, S3Store):  # 70 MiB / 16 MiB parts -> a 5-part multipart upload
        etag = store._client.stat_object(store.bucket, "big/object.bin").etag
        assert etag.endswith("-5"), etag


# -- atomic publish ------------------------------------------------------------------


def test_open_stream_reads_and_seeks_without_holding_the_object(store, monkeypatch):
    import services.common.store as store_module

    monkeypatch.setattr(store_module, "STREAM_BLOCK", 1000)  # several ranged GETs for this object
    data = bytes(range(256)) * 40  # 10240 bytes
    store.put_bytes("streams/a.bin", data)
    with store.open_stream("streams/a.bin") as f:
        assert f.read(5) == data[:5]
        f.seek(5000)
        assert f.read(3000) == data[5000:8000]
        f.seek(-10, 2)
        assert f.read() == data[-10:] and f.read() == b""
        f.seek(0)
        assert b"".join(iter(lambda: f.read(777), b"")) == data
    if isinstance(store, store_module.S3Store):
        reads = []
        real = store.get_range
        monkeypatch.setattr(
            store, "get_range", lambda key, offset, length: reads.append(length) or real(key, offset, length)
        )
        with store.open_stream("streams/a.bin") as f:
            f.seek(9000)
            assert f.read(100) == data[9000:9100]
        assert reads and max(reads) <= 1240  # one block from 9000, never the whole object
        reads.clear()
        with store.open_stream("streams/a.bin") as f:
            while f.read1(100):  # TextIOWrapper reads like this: small reads come from one block
                pass
        assert len(reads) == 11 and max(reads) == 1000, reads
    with pytest.raises(NotFoundError):
        store.open_stream("streams/missing.bin")


def test_put_new_lets_exactly_one_of_racing_writers_create_a_key(store):
    barrier = threading.Barrier(8)

    def write(i):
        barrier.wait()
        try:
            store.put_new("datasets/d/v/manifest.json", b"writer %d" % i)
            return i
        except AlreadyExistsError:
            return None

    with ThreadPoolExecutor(8) as pool:
        winners = [i for i in pool.map(write, range(8)) if i is not None]
    assert len(winners) == 1
    assert store.get_bytes("datasets/d/v/manifest.json") == b"writer %d" % winners[0]
    assert list(store.list("datasets/d/v/")) == ["datasets/d/v/manifest.json"]  # no temp file left


def test_publish_writes_manifest_last(store, tmp_path, monkeypatch):
    shard = tmp_path / "shard.npz"
    shard.write_bytes(b"shard bytes")
    prefix = "datasets/iris/abc123/"
    order, seen_at_manifest = [], []
    real_put_bytes, real_put_file, real_put_new = store.put_bytes, store.put_file, store.put_new

    def put_bytes(key, data):
        order.append(key)
        real_put_bytes(key, data)

    def put_new(key, data):  # the manifest is written create-only
        if key.endswith("manifest.json"):
            seen_at_manifest.extend(store.list(prefix))
        order.append(key)
        real_put_new(key, data)

    def put_file(key, path):
        order.append(key)
        real_put_file(key, path)

    monkeypatch.setattr(store, "put_bytes", put_bytes)
    monkeypatch.setattr(store, "put_file", put_file)
    monkeypatch.setattr(store, "put_new", put_new)

    assert not store.is_published(prefix, "manifest.json")
    store.publish(
        prefix, {"shard-00000.npz": str(shard), "shard-00001.npz": b"inline"}, "manifest.json", b'{"rows": 2}'
    )
    assert order[-1] == prefix + "manifest.json"
    assert seen_at_manifest == [prefix + "shard-00000.npz", prefix + "shard-00001.npz"]
    assert store.is_published(prefix, "manifest.json")
    assert store.is_published(prefix.rstrip("/"), "manifest.json")
    assert store.get_bytes(prefix + "shard-00000.npz") == b"shard bytes"
    assert store.get_bytes(prefix + "manifest.json") == b'{"rows": 2}'


def test_publish_failure_cleans_up_and_never_writes_manifest(store, tmp_path):
    good = tmp_path / "good.bin"
    good.write_bytes(b"good")
    prefix = "models/iris/3/"
    with pytest.raises(FileNotFoundError):
        store.publish(
            prefix,
            {"a.bin": b"aaa", "b.bin": str(good), "c.bin": str(tmp_path / "does-not-exist")},
            "cookline.json",
            b"{}",
        )
    assert not store.is_published(prefix, "cookline.json")
    assert list(store.list(prefix)) == []
    assert store.list_dirs("models/iris/") == []


def test_publish_refuses_to_overwrite_a_published_version(store):
    store.publish("m/1/", {"w": b"old"}, "meta.json", b"{}")
    with pytest.raises(StoreError, match="already published"):
        store.publish("m/1/", {"w": b"new"}, "meta.json", b"{}")
    assert store.get_bytes("m/1/w") == b"old"


# -- backend specifics ---------------------------------------------------------------


def test_s3_describe_and_repr_hide_secret(s3_server, s3_store):
    assert s3_store.describe() == f"s3://{s3_store.bucket} at http://{s3_server.endpoint}"
    assert s3_server.secret_key not in repr(s3_store)
    assert s3_server.secret_key not in repr(s3_server)


def test_s3_bucket_creation_is_idempotent(s3_server):
    bucket = unique_bucket()
    a = S3Store(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, bucket)
    a.put_bytes("k", b"v")
    b = S3Store("http://" + s3_server.endpoint, s3_server.access_key, s3_server.secret_key, bucket)
    assert b.get_bytes("k") == b"v"


def test_s3_concurrent_bucket_creation(s3_server):
    bucket = unique_bucket()

    def make(_):
        return S3Store(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, bucket)

    with ThreadPoolExecutor(6) as pool:
        stores = list(pool.map(make, range(6)))
    stores[0].put_bytes("k", b"v")
    assert stores[-1].get_bytes("k") == b"v"


def test_s3_wrong_secret_is_an_error_without_the_secret(s3_server):
    wrong = "WrongSecret-" + os.urandom(8).hex()
    with pytest.raises(StoreError) as info:
        S3Store(s3_server.endpoint, s3_server.access_key, wrong, unique_bucket(), retries=2, backoff=0.01)
    assert not isinstance(info.value, NotFoundError)
    assert wrong not in str(info.value) and wrong not in repr(info.value)
    assert info.value.__cause__ is None or wrong not in str(info.value.__cause__)


def test_s3_unreachable_endpoint_is_unavailable(s3_server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the with-block ends
    secret = "Secret-" + os.urandom(8).hex()
    with pytest.raises(StoreUnavailableError) as info:
        S3Store(f"127.0.0.1:{port}", "ak", secret, "bucket", retries=2, backoff=0.01)
    assert secret not in str(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)


def test_s3_data_survives_server_restart():
    with SeaweedS3() as server:  # its own server: restarting the shared one would disturb others
        store = S3Store(server.endpoint, server.access_key, server.secret_key, unique_bucket())
        store.put_bytes("datasets/d/1/manifest.json", b"{}")
        endpoint, pid = server.endpoint, server.proc.pid
        server.restart()
        assert server.endpoint == endpoint and server.proc.pid != pid
        assert store.get_bytes("datasets/d/1/manifest.json") == b"{}"  # same client reconnects
        tmpdir = server.tmpdir
    assert not server.running and not os.path.exists(tmpdir)


# -- configuration ---------------------------------------------------------------------


def test_store_from_env_s3(s3_server, tmp_path):
    env = s3_server.env(unique_bucket())
    store = store_from_env(env)
    assert isinstance(store, S3Store) and store.bucket == env["COOKLINE_BUCKET"]
    store.put_bytes("k", b"v")
    # secrets from files (docker/k8s secrets), stripped
    (tmp_path / "ak").write_text(s3_server.access_key + "\n")
    (tmp_path / "sk").write_text(s3_server.secret_key + "\n")
    env2 = {
        "MINIO_ENDPOINT": "http://" + s3_server.endpoint,
        "MINIO_ACCESS_KEY_FILE": str(tmp_path / "ak"),
        "MINIO_SECRET_KEY_FILE": str(tmp_path / "sk"),
        "COOKLINE_BUCKET": env["COOKLINE_BUCKET"],
        "MINIO_SECURE": "false",
    }
    assert store_from_env(env2).get_bytes("k") == b"v"
