"""The local-directory ObjectStore's specifics and choosing a backend from the environment (no server:
the behaviour suite shared with S3 is tests/integration/test_store_conformance.py)."""

import os

import pytest

from services.common.store import LocalStore, store_from_env


def test_local_ignores_temp_files_and_rejects_escape(local_store):
    local_store.put_bytes("d/x", b"1")
    # a temp file left by a crashed writer must never show up as an object
    open(os.path.join(local_store.root, "d", ".x.abc.cookline-tmp"), "wb").close()
    assert list(local_store.list("")) == ["d/x"]
    with pytest.raises(ValueError):
        local_store.put_bytes("../x", b"escape")
    assert not os.path.exists(os.path.join(os.path.dirname(local_store.root), "x"))
    assert local_store.describe() == "local:" + local_store.root


def test_store_from_env_local_default(tmp_path, monkeypatch):
    store = store_from_env({"COOKLINE_DATA_DIR": str(tmp_path)})
    assert isinstance(store, LocalStore)
    assert store.root == str(tmp_path / "cookline")
    store = store_from_env({"COOKLINE_DATA_DIR": str(tmp_path), "COOKLINE_BUCKET": "other"})
    assert store.root == str(tmp_path / "other")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert store_from_env({}).root == str(tmp_path / "home" / ".cookline" / "store" / "cookline")


def test_store_from_env_missing_credentials():
    with pytest.raises(ValueError, match="MINIO_SECRET_KEY"):
        store_from_env({"MINIO_ENDPOINT": "127.0.0.1:9", "MINIO_ACCESS_KEY": "ak"})
    with pytest.raises(ValueError, match="MINIO_ACCESS_KEY"):
        store_from_env({"MINIO_ENDPOINT": "127.0.0.1:9", "MINIO_SECRET_KEY": "sk"})


def test_a_verified_file_is_hashed_once_and_any_later_write_is_caught(local_store, monkeypatch):
    from services.common import store as store_module

    data = os.urandom(1 << 16)
    local_store.put_bytes("d/shard", data)
    digest = store_module.sha256_of(data)
    hashed = []
    real = store_module.hashlib.sha256
    monkeypatch.setattr(store_module.hashlib, "sha256", lambda b=b"": hashed.append(1) or real(b))
    assert bytes(local_store.get_buffer("d/shard", sha256=digest)) == data
    assert bytes(local_store.get_buffer("d/shard", sha256=digest)) == data  # the same file: not hashed again
    assert len(hashed) == 1
    with open(os.path.join(local_store.root, "d", "shard"), "r+b") as f:  # bitrot written in place: same inode
        f.seek(100)
        f.write(bytes([data[100] ^ 0xFF]))
    with pytest.raises(store_module.ChecksumError, match="d/shard is corrupt"):
        local_store.get_buffer("d/shard", sha256=digest)
    local_store.put_bytes("d/shard", data)  # replaced by the original bytes: verified afresh, and good
    assert bytes(local_store.get_buffer("d/shard", sha256=digest)) == data
    assert len(hashed) == 3
