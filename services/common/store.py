"""The object store: one interface, a local-directory backend and an S3 (MinIO) backend.

Keys are '/'-separated paths inside one bucket (docs/api.md, "Storage layout"). A dataset
or model version becomes visible only when its manifest is written, and `publish` writes
the manifest last. Credentials never appear in messages, logs or reprs.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import errno
import hashlib
import io
import logging
import mmap
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError

from cookline import config, settings

PART_SIZE = 16 * 1024 * 1024
# Bytes per ranged GET of a streamed object (open_stream): what a streaming reader holds at a time.
STREAM_BLOCK = 8 * 1024 * 1024
log = logging.getLogger("cookline.store")

# Longest wait between two attempts of a store call, in seconds.
MAX_BACKOFF_S = 2.0
_TMP_SUFFIX = ".cookline-tmp"
_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchObject", "NotFound"}
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}
_TRANSIENT_STATUS = {500, 502, 503, 504}
# S3 error codes of a write refused for room: MinIO's full disk and bucket quota, SeaweedFS' and others' quota.
_FULL_CODES = {"XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "QuotaExceeded", "StorageFull"}
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "AccountProblem"}
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_DENIED_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


class StoreError(Exception):
    """Base class of object-store errors."""


class NotFoundError(StoreError):
    """The key does not exist."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached (after retries)."""


class StoreFullError(StoreError):
    """The store has no room for a write: the local disk is full (ENOSPC, EDQUOT) or an S3 server refused it
    over a quota or a full disk (RESOURCE_EXHAUSTED)."""


class StoreDeniedError(StoreError):
    """The store refused the call: the S3 access key lacks the permission (AccessDenied), or the local
    store's folder is read-only (PERMISSION_DENIED)."""


class AlreadyExistsError(StoreError):
    """A create-only write found the key already there (another writer published it first)."""


class ChecksumError(StoreError):
    """An object's stored bytes do not match the checksum recorded when it was published (DATA_LOSS)."""


def sha256_file(path: str) -> str:
    """Hex sha256 of a local file (what publish records for each object)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(src: str | bytes) -> str:
    """Hex sha256 of bytes, or of the local file at a path."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return hashlib.sha256(src).hexdigest()
    return sha256_file(src)


def verify(key: str, digest: str, expected: str | None) -> None:
    """ChecksumError naming the object unless `digest` is the `expected` sha256 (None: an old record
    without checksums, not verified)."""
    if expected is not None and digest != expected:
        raise ChecksumError(
            f"object {key} is corrupt: its sha256 is {digest}, the record written at publish says {expected}"
        )


class _HashingWriter:
    """A file wrapper that hashes what is written through it (verifying a download costs no second read)."""

    def __init__(self, f):
        self.f, self.digest = f, hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.f.write(data)


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError("object key must be a non-empty string")
    if key.startswith("/") or "\\" in key:
        raise ValueError(f"invalid object key {key!r}: no leading '/' or backslash")
    if any(seg in ("", ".", "..") for seg in key.split("/")) or key.endswith(_TMP_SUFFIX):
        raise ValueError(f"invalid object key {key!r}: empty, '.' or '..' segment")
    return key


def _check_prefix(prefix: str) -> str:
    """A prefix may be empty or end mid-name or with '/'; otherwise keys' rules apply."""
    if prefix:
        _check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


class ObjectStat(NamedTuple):
    """What ObjectStore.stat tells of one object."""

    size: int  # bytes
    modified: float  # when it was last written, seconds since the epoch


class ObjectStore(abc.ABC):
    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...
    @abc.abstractmethod
    def put_file(self, key: str, path: str) -> None: ...
    @abc.abstractmethod
    def put_new(self, key: str, data: bytes) -> None:
        """Writes `data` only if `key` does not exist yet, atomically: of two writers racing for the
        same key exactly one succeeds; the other gets AlreadyExistsError (and writes nothing)."""

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes: ...
    @abc.abstractmethod
    def get_file(self, key: str, path: str, sha256: str | None = None) -> None:
        """Downloads an object to `path` (atomically). With `sha256`, the bytes are hashed as they are
        copied and a mismatch raises ChecksumError and leaves nothing at `path`."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...
    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[str]: ...
    @abc.abstractmethod
    def stat(self, key: str) -> ObjectStat:
        """The object's size and when it was last written; NotFoundError if absent."""

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...
    @abc.abstractmethod
    def describe(self) -> str: ...

    def open_stream(self, key: str):
        """A seekable, read-only binary file object over the object's bytes, for readers that stream
        a large object (an s3:// source) instead of holding it: local files are opened, S3 objects
        read by ranged GETs of STREAM_BLOCK bytes. This default holds the whole object."""
        return io.BytesIO(self.get_bytes(key))

    def get_buffer(self, key: str, sha256: str | None = None):
        """The object's bytes as a read-only buffer (bytes, or a memory map for local files).

        For readers that view the data in place (numpy.frombuffer) instead of copying it.
        With `sha256`, the buffer is hashed in memory (no second read) and a mismatch raises
        ChecksumError naming the object.
        """
        buffer = self._buffer(key)
        if sha256 is not None:
            verify(key, hashlib.sha256(buffer).hexdigest(), sha256)
        return buffer

    def _buffer(self, key: str):
        return self.get_bytes(key)

    def list_dirs(self, prefix: str) -> builtins.list[str]:  # `list` here is the method below
        """Immediate sub-folder names under prefix, e.g. "models/iris/" -> ["1", "2"].

        Derived from the keys themselves rather than S3 delimiter listings: some S3
        servers (SeaweedFS) keep reporting emptied folders as common prefixes for minutes.
        """
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        rests = (key[len(prefix) :] for key in self.list(prefix))
        return sorted({rest.split("/", 1)[0] for rest in rests if "/" in rest})

    def delete_prefix(self, prefix: str) -> None:
        for key in list(self.list(prefix)):
            self.delete(key)

    def publish(
        self,
        prefix: str,
        files: Mapping[str, str | bytes],
        manifest_name: str,
        manifest: bytes,
        before_manifest: Callable[[], None] | None = None,
    ) -> None:
        """Write `files` under `prefix`, then the manifest LAST; undo on failure. `before_manifest`
        runs between the two: an exception from it undoes the files too (a model version's publisher
        checks there that its claim is still its own).

        Versions are immutable, so publishing over a published prefix is refused (and a
        failed re-publish must not clean up files the existing manifest refers to). The manifest
        is written create-only (put_new): of two publishers racing for one prefix, exactly one
        wins and the other gets AlreadyExistsError.
        """
        if not prefix.endswith("/"):
            prefix += "/"
        _check_prefix(prefix)
        if manifest_name in files:
            raise ValueError(f"manifest {manifest_name!r} must not also be listed in files")
        if self.is_published(prefix, manifest_name):
            raise StoreError(f"{prefix}{manifest_name} already published; versions are immutable")
        written: list[str] = []
        try:
            for name, src in files.items():
                key = _check_key(prefix + name)
                written.append(key)  # before the write: a failed put may leave a partial object
                if isinstance(src, (bytes, bytearray, memoryview)):
                    self.put_bytes(key, bytes(src))
                else:
                    self.put_file(key, src)
            if before_manifest is not None:
                before_manifest()
            try:  # create-only: two publishers of one prefix cannot both win
                self.put_new(prefix + manifest_name, manifest)
            except AlreadyExistsError:
                if self._get_or_none(prefix + manifest_name) == manifest:
                    return  # our own write, retried after a lost response
                raise AlreadyExistsError(
                    f"{prefix}{manifest_name} already published by another writer; versions are immutable"
                ) from None
        except BaseException:
            for key in written:
                try:
                    self.delete(key)
                except Exception:  # best effort; the original error matters more
                    pass
            raise

    def _get_or_none(self, key: str) -> bytes | None:
        try:
            return self.get_bytes(key)
        except NotFoundError:
            return None

    def is_published(self, prefix: str, manifest_name: str) -> bool:
        if not prefix.endswith("/"):
            prefix += "/"
        return self.exists(prefix + manifest_name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class _RangeReader(io.RawIOBase):
    """A seekable read-only view of one S3 object: every read is a ranged GET, so the object is never
    held whole, in memory or on disk (io.BufferedReader above it reads STREAM_BLOCK at a time)."""

    def __init__(self, store: S3Store, key: str, size: int):
        self.store, self.key, self.size, self.pos = store, key, size, 0
        self.block, self.block_start = b"", 0  # the last ranged GET's bytes, and where they start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        if self.pos >= self.size or not len(buffer):
            return 0
        if not self.block_start <= self.pos < self.block_start + len(self.block):
            # at least a block per GET: small reads (TextIOWrapper's 8 KiB read1 calls) are served from it
            length = min(max(len(buffer), STREAM_BLOCK), self.size - self.pos)
            self.block, self.block_start = self.store.get_range(self.key, self.pos, length), self.pos
        offset = self.pos - self.block_start
        count = min(len(buffer), len(self.block) - offset)
        buffer[:count] = self.block[offset : offset + count]
        self.pos += count
        return count


# Files whose verified identity LocalStore remembers (a few hundred bytes each); then it starts afresh.
_VERIFIED_MAX = 100_000


class LocalStore(ObjectStore):
    """Objects are files under `root`; each put is a temp file + os.replace (atomic)."""

    def __init__(self, root: str):
        self.root = os.path.abspath(os.path.expanduser(root))
        os.makedirs(self.root, exist_ok=True)
        self._verified: dict[str, tuple] = {}  # path -> identity of the file when its sha256 matched

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *_check_key(key).split("/"))

    @contextlib.contextmanager
    def _writing(self, key: str):
        """A full disk (ENOSPC, EDQUOT) as StoreFullError, a read-only folder as StoreDeniedError, each
        naming the key and the store's folder."""
        try:
            yield
        except OSError as exc:
            if exc.errno in _FULL_ERRNOS:
                raise StoreFullError(
                    f"put {key}: no space left on the local store's disk ({errno.errorcode[exc.errno]}: "
                    f"{os.strerror(exc.errno)}) under {self.root}"
                ) from None
            if exc.errno in _DENIED_ERRNOS and exc.filename is not None and str(exc.filename).startswith(self.root):
                raise StoreDeniedError(
                    f"put {key}: the local store's folder {self.root} is not writable "
                    f"({errno.errorcode[exc.errno]}: {os.strerror(exc.errno)})"
                ) from None
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._writing(key):
            _atomic_write(self._path(key), lambda f: f.write(data))

    def put_file(self, key: str, path: str) -> None:
        with open(path, "rb") as src, self._writing(key):  # opened first: a missing source writes nothing
            _atomic_write(self._path(key), lambda f: shutil.copyfileobj(src, f, 1 << 20))

    def put_new(self, key: str, data: bytes) -> None:
        with self._writing(key):
            self._put_new(key, data)

    def _put_new(self, key: str, data: bytes) -> None:
        """A temp file, fsynced, then link(2) to the key: link refuses an existing name atomically."""
        path = self._path(key)
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix="." + os.path.basename(path) + ".", suffix=_TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise AlreadyExistsError(f"object already exists: {key}") from None
        finally:
            os.unlink(tmp)

    def get_bytes(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"object not found: {key}") from None

    def get_buffer(self, key: str, sha256: str | None = None):
        """A read-only memory map of the file: pages come straight from the page cache.

        Verified once per file: a file whose bytes matched `sha256` is not hashed again while
        its identity (device, inode, size, modification and change times) is the same. Any
        write to the file changes its change time (a replace changes its inode too), so
        changed bytes are still DATA_LOSS; reading a dataset again (every epoch) costs no
        second hash of its shards.
        """
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, sha256)
                # MAP_POPULATE: the pages are mapped now (on the prefetch thread), not faulted in one
                # by one while the data streams.
                buffer = (
                    mmap.mmap(
                        f.fileno(), 0, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0), prot=mmap.PROT_READ
                    )
                    if st.st_size
                    else b""
                )
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"object not found: {key}") from None
        if sha256 is not None and self._verified.get(path) != identity:
            verify(key, hashlib.sha256(buffer).hexdigest(), sha256)
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            self._verified[path] = identity
        return buffer

    def open_stream(self, key: str):
        try:
            return open(self._path(key), "rb")  # the caller closes it
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"object not found: {key}") from None

    def get_file(self, key: str, path: str, sha256: str | None = None) -> None:
        try:
            src = open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"object not found: {key}") from None
        with src:
            _atomic_write(path, _copier(key, src, sha256))

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def stat(self, key: str) -> ObjectStat:
        try:
            found = os.stat(self._path(key))
            return ObjectStat(found.st_size, found.st_mtime)
        except FileNotFoundError:
            raise NotFoundError(f"object not found: {key}") from None

    def list(self, prefix: str) -> Iterator[str]:
        _check_prefix(prefix)
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = os.path.join(self.root, *base.split("/")) if base else self.root
        keys = []
        for dirpath, _dirs, names in os.walk(top):
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for name in names:
                key = name if rel == "." else rel + "/" + name
                if key.startswith(prefix) and not name.endswith(_TMP_SUFFIX):
                    keys.append(key)
        return iter(sorted(keys))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, IsADirectoryError):
            return
        # Prune now-empty parent dirs (S3 has no empty folders either).
        parent = os.path.dirname(path)
        while parent != self.root:
            try:
                os.rmdir(parent)
            except OSError:
                break
            parent = os.path.dirname(parent)

    def describe(self) -> str:
        return "local:" + self.root


def _copier(key: str, src, sha256: str | None):
    """A writer for _atomic_write copying `src`; with `sha256`, it hashes on the way and raises
    ChecksumError (before the file becomes visible) on a mismatch."""

    def write(f):
        sink = _HashingWriter(f) if sha256 is not None else f
        shutil.copyfileobj(src, sink, 1 << 20)
        if sha256 is not None:
            verify(key, sink.digest.hexdigest(), sha256)

    return write


def _atomic_write(path: str, writer) -> None:
    """Write a file via a temp file in the same dir + os.replace: readers never see half."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix="." + os.path.basename(path) + ".", suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class S3Store(ObjectStore):
    """An S3 bucket through the `minio` SDK (MinIO first, any S3 server)."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str | None = None,
        retries: int = 5,
        backoff: float = 0.2,
        retry_seconds: float = 0.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
    ):
        if endpoint.startswith(("http://", "https://")):
            secure = endpoint.startswith("https://")
            endpoint = endpoint.split("://", 1)[1]
        endpoint = endpoint.rstrip("/")
        if not endpoint or "/" in endpoint:
            raise ValueError(f"S3 endpoint must be host:port, got {endpoint!r}")
        self.endpoint, self.bucket, self.secure = endpoint, bucket, secure
        # A call is tried at least `retries` times and, beyond that, until `retry_seconds` have
        # passed since its first attempt (an S3 server restarting takes a few seconds).
        self.retries, self.backoff, self.retry_seconds = max(1, retries), backoff, 0.0
        self._secret = secret_key  # only for scrubbing messages
        # Our own retry loop handles transient errors, so urllib3 must not retry as well.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=10,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        self._client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region, http_client=http
        )
        self.ensure_bucket()  # a few quick tries only: store_from_env waits for a store still starting
        self.retry_seconds = max(0.0, retry_seconds)

    def describe(self) -> str:
        return "s3://{} at {}://{}".format(self.bucket, "https" if self.secure else "http", self.endpoint)

    def _call(self, what: str, fn, key: str | None = None):
        """Run fn() with retries on transient errors; map errors to StoreError types."""
        delay, started, attempt = self.backoff, time.monotonic(), 0
        while True:
            attempt += 1
            try:
                return fn()
            except S3Error as e:
                if e.code in _NOT_FOUND_CODES and key is not None:
                    raise NotFoundError(f"object not found: {key}") from None
                status = getattr(e.response, "status", 0) or 0
                if e.code in _FULL_CODES:
                    raise StoreFullError(
                        self._scrub(f"{what}: {self.describe()} refused the write for room: {e.code}: {e.message}")
                    ) from None
                if e.code in _DENIED_CODES:
                    raise StoreDeniedError(
                        self._scrub(
                            f"{what}: {self.describe()} denied it: {e.code}: {e.message} (the access key lacks "
                            "the permission, e.g. Write on the bucket)"
                        )
                    ) from None
                if e.code not in _TRANSIENT_CODES and status not in _TRANSIENT_STATUS:
                    raise StoreError(
                        self._scrub(f"{what} failed on {self.describe()}: {e.code}: {e.message}")
                    ) from None
                err: Exception = e
            except (ServerError, InvalidResponseError) as e:
                status = getattr(e, "status_code", None) or getattr(e, "_code", 0) or 0
                if status not in _TRANSIENT_STATUS:
                    raise StoreError(self._scrub(f"{what} failed on {self.describe()}: {e}")) from None
                err = e
            except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as e:
                err = e  # network trouble; local-disk OSErrors are not retried
            elapsed = time.monotonic() - started
            if attempt >= self.retries and elapsed + delay > self.retry_seconds:
                break
            log.warning("%s: object store call failed (%s); retrying in %.1f s", what, type(err).__name__, delay)
            time.sleep(delay)  # back-off before the next attempt
            delay = min(delay * 2, MAX_BACKOFF_S)
        raise StoreUnavailableError(
            self._scrub(
                f"{what}: object store {self.describe()} unavailable after {attempt} "
                f"attempts in {time.monotonic() - started:.1f} s: {type(err).__name__}: {err}"
            )
        ) from None

    def _scrub(self, msg: str) -> str:
        return msg.replace(self._secret, "***") if self._secret else msg

    def ensure_bucket(self) -> None:
        def make():
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket)
            except S3Error as e:  # another process created it at the same time
                if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

        self._call("create bucket", make)

    def put_bytes(self, key: str, data: bytes) -> None:
        _check_key(key)
        self._call("put " + key, lambda: self._client.put_object(self.bucket, key, io.BytesIO(data), len(data)))

    def put_new(self, key: str, data: bytes) -> None:
        """PutObject with `If-None-Match: *` (S3 conditional writes: AWS, MinIO, SeaweedFS); the server
        answers 412 PreconditionFailed when the key exists. The SDK's put_object has no way to send
        that header, so its one-request form (_put_object, minio pinned in pyproject.toml) is used."""
        _check_key(key)

        def put():
            try:
                self._client._put_object(
                    self.bucket, key, data, headers={"If-None-Match": "*", "Content-Type": "application/octet-stream"}
                )
            except S3Error as e:
                if e.code == "PreconditionFailed":
                    raise AlreadyExistsError(f"object already exists: {key}") from None
                raise

        self._call("put " + key, put)

    def put_file(self, key: str, path: str) -> None:
        _check_key(key)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file to upload: {path}")
        # fput_object switches to multipart above part_size and aborts the upload on failure.
        self._call("put " + key, lambda: self._client.fput_object(self.bucket, key, path, part_size=PART_SIZE))

    def _get(self, key: str, sink) -> None:
        def run():
            resp = self._client.get_object(self.bucket, key)
            try:
                sink(resp)
            finally:
                resp.close()
                resp.release_conn()

        self._call("get " + key, run, key=key)

    def get_bytes(self, key: str) -> bytes:
        _check_key(key)
        out = []
        self._get(key, lambda resp: out.append(resp.read()))
        return out[-1]

    def open_stream(self, key: str):
        _check_key(key)
        size = self._call("stat " + key, lambda: self._client.stat_object(self.bucket, key).size, key=key)
        return io.BufferedReader(_RangeReader(self, key, size))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes of the object from `offset` (one ranged GET, retried like every call)."""
        out = []

        def run():
            resp = self._client.get_object(self.bucket, key, offset=offset, length=length)
            try:
                out.append(resp.read())
            finally:
                resp.close()
                resp.release_conn()

        self._call("get " + key, run, key=key)
        return out[-1]

    def get_file(self, key: str, path: str, sha256: str | None = None) -> None:
        _check_key(key)
        self._get(key, lambda resp: _atomic_write(path, _copier(key, resp, sha256)))

    def exists(self, key: str) -> bool:
        _check_key(key)
        try:
            self._call("stat " + key, lambda: self._client.stat_object(self.bucket, key), key=key)
            return True
        except NotFoundError:
            return False

    def stat(self, key: str) -> ObjectStat:
        _check_key(key)
        found = self._call("stat " + key, lambda: self._client.stat_object(self.bucket, key), key=key)
        return ObjectStat(int(found.size or 0), found.last_modified.timestamp() if found.last_modified else 0.0)

    def list(self, prefix: str) -> Iterator[str]:
        _check_prefix(prefix)
        objs = self._call(
            "list " + prefix,
            lambda: list(self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True)),
        )
        # Sorted client-side: not every S3 server lists in strict byte order.
        return iter(sorted(o.object_name for o in objs if not o.is_dir))

    def delete(self, key: str) -> None:
        _check_key(key)  # S3 DELETE of a missing key succeeds
        self._call("delete " + key, lambda: self._client.remove_object(self.bucket, key))

    def delete_prefix(self, prefix: str) -> None:
        keys = list(self.list(prefix))
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [DeleteObject(k) for k in keys[i : i + 1000]]
            errors = self._call(
                "delete " + prefix, lambda batch=batch: list(self._client.remove_objects(self.bucket, batch))
            )
            if errors:
                raise StoreError(
                    f"delete {prefix} failed for {len(errors)} keys, first: {errors[0].name}: {errors[0].code}"
                )


def _env_secret(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value and env.get(name + "_FILE"):
        try:
            with open(env[name + "_FILE"]) as f:
                value = f.read().strip()
        except OSError as e:
            raise ValueError(f"cannot read {name}_FILE: {e.strerror}") from None
    if not value:
        raise ValueError(f"{name} (or {name}_FILE) must be set when MINIO_ENDPOINT is set")
    return value


def store_from_env(env: Mapping[str, str] = os.environ, bucket: str | None = None) -> ObjectStore:
    """S3Store when MINIO_ENDPOINT is set, else a LocalStore (same bucket layout).

    `bucket` overrides COOKLINE_BUCKET (collect reads s3://other-bucket/... sources).
    """
    bucket = bucket or env.get("COOKLINE_BUCKET") or settings.default("COOKLINE_BUCKET")
    endpoint = env.get("MINIO_ENDPOINT", "").strip()
    if endpoint:
        secure_flag = env.get("MINIO_SECURE", "").strip().lower()
        access_key, secret_key = _env_secret(env, "MINIO_ACCESS_KEY"), _env_secret(env, "MINIO_SECRET_KEY")
        # A service may start before the object store does (compose, Kubernetes): keep
        # trying for COOKLINE_STORE_WAIT_S; S3Store itself retries each call a few times.
        deadline = time.monotonic() + config.store_wait_seconds(env)
        while True:
            try:
                return S3Store(
                    endpoint,
                    access_key,
                    secret_key,
                    bucket,
                    secure=secure_flag in ("1", "true", "yes", "on"),
                    region=env.get("MINIO_REGION") or None,
                    retry_seconds=config.store_retry_seconds(env),
                )
            except StoreUnavailableError:
                if time.monotonic() >= deadline:
                    raise
                logging.getLogger("cookline.store").warning(
                    "object store at %s not reachable yet; waiting for it (COOKLINE_STORE_WAIT_S)", endpoint
                )
                time.sleep(1.0)  # back-off between attempts to reach the store
    root = env.get("COOKLINE_DATA_DIR") or settings.default("COOKLINE_DATA_DIR")
    return LocalStore(os.path.join(os.path.expanduser(root), bucket))
