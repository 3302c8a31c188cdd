"""s3://bucket/prefix sources: objects that already sit in the object store.

Nothing is copied to local disk: the format's source opens paths that stand for
the objects (sources/base.py `streamed`), and each open reads its object by
ranged GETs of STREAM_BLOCK bytes, so no object is held whole either (the
content hash and the ingest each read it once). A one-object source (csv,
text-csv, npz) is one such path. An image-folder or voc source is a local
folder of empty placeholder files, one per object (keys relative to the prefix
become paths), so the source lists it as it would a local folder and reads each
image object by object.
"""

from __future__ import annotations

import contextlib
import os
import re

from services.collect.sources.base import streamed
from services.common.errors import invalid, not_found
from services.common.store import store_from_env

BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def parse(url: str, field: str = "collect.source") -> tuple[str, str]:
    """('bucket', 'prefix') of s3://bucket/prefix; INVALID_ARGUMENT naming `field` when it is not one."""
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not url.startswith("s3://") or not BUCKET.fullmatch(bucket):
        raise invalid(f"{field}: {url!r} does not name a valid bucket (s3://bucket/prefix)")
    if ".." in prefix.split("/") or prefix.startswith("/"):
        raise invalid(f"{field}: {url!r}: the prefix must not contain '..' or start with '/'")
    return bucket, prefix


# Formats read from one object (front to back, or npz by seeks).
STREAMED_FORMATS = ("csv", "text-csv", "npz")


@contextlib.contextmanager
def source_path(url: str, fmt: str, into: str):
    """The path the format's source reads for s3://bucket/prefix, valid within the block: a path
    standing for the one object of a csv, text-csv or npz source, else a folder of placeholders."""
    if fmt not in STREAMED_FORMATS:
        with streamed_folder(url, into) as root:
            yield root
        return
    bucket, prefix = parse(url)
    store = store_from_env(bucket=bucket)
    keys = list(store.list(prefix))
    base = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    if keys != [prefix]:  # a "folder": its one object
        keys = [k for k in keys if k.startswith(base)]
        if len(keys) != 1:
            if not keys:
                raise not_found(f"collect.source: no objects under {url!r}")
            raise invalid(f"collect.source: {fmt} needs one object, but {url!r} holds {len(keys)}")
    key = keys[0]
    path = os.path.join(into, "stream", os.path.basename(key))
    with streamed({path: lambda: store.open_stream(key)}):
        yield path


@contextlib.contextmanager
def streamed_folder(url: str, into: str):
    """A local folder of empty placeholders, one per object under s3://bucket/prefix/, each opening as
    a stream of its object (see source_path)."""
    bucket, prefix = parse(url)
    store = store_from_env(bucket=bucket)
    base = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    root = os.path.join(into, "objects")
    openers = {}
    for key in store.list(prefix):
        if not key.startswith(base):
            continue  # s3://b/data matches data2/...: only keys inside the "folder" count
        path = os.path.join(root, *key[len(base) :].split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()  # a placeholder: listed like a file, read from the store
        openers[path] = (lambda k: lambda: store.open_stream(k))(key)
    if not openers:
        raise not_found(f"collect.source: no objects under {url!r}")
    with streamed(openers):
        yield root
