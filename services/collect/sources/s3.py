"""s3://bucket/prefix sources: objects that already sit in the object store.

A one-object source (csv, text-csv, npz) is streamed: the format's source opens
a path that stands for the object (sources/base.py `streamed`), and each open
reads the object by ranged GETs of STREAM_BLOCK bytes, so it is never copied to
local disk or held whole in memory (the content hash and the ingest each read
it once). The objects of an image-folder or voc source are copied, one at a
time, into a local folder (keys relative to the prefix become paths), which the
source then reads as it would a local folder.
"""
from __future__ import annotations

import contextlib
import os
import re

from services.collect.sources.base import streamed
from services.common.errors import invalid, not_found
from services.common.store import store_from_env

BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def parse(url: str) -> tuple[str, str]:
    """('bucket', 'prefix') of s3://bucket/prefix."""
    rest = url[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if not BUCKET.fullmatch(bucket):
        raise invalid(f"collect.source: {url!r} does not name a valid bucket (s3://bucket/prefix)")
    if ".." in prefix.split("/") or prefix.startswith("/"):
        raise invalid(f"collect.source: {url!r}: the prefix must not contain '..' or start with '/'")
    return bucket, prefix


def fetch(url: str, into: str) -> str:
    """Copies the objects of s3://bucket/prefix into the folder `into`; returns the path to read."""
    bucket, prefix = parse(url)
    store = store_from_env(bucket=bucket)
    keys = list(store.list(prefix))
    if not keys:
        raise not_found(f"collect.source: no objects under {url!r}")
    if keys == [prefix]:  # the prefix is one object
        path = os.path.join(into, os.path.basename(prefix))
        store.get_file(prefix, path)
        return path
    base = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    root = os.path.join(into, "objects")
    for key in keys:
        if not key.startswith(base):
            continue  # s3://b/data matches data2/...: only keys inside the "folder" count
        store.get_file(key, os.path.join(root, *key[len(base):].split("/")))
    if not os.path.isdir(root):
        raise not_found(f"collect.source: no objects under {url!r}")
    return root


# Formats read from one file front to back (or, npz, by seeks): streamed instead of copied.
STREAMED_FORMATS = ("csv", "text-csv", "npz")


@contextlib.contextmanager
def source_path(url: str, fmt: str, into: str):
    """The path the format's source reads for s3://bucket/prefix, valid within the block: a stream
    standing for the one object of a csv, text-csv or npz source, else a local copy (see fetch)."""
    if fmt not in STREAMED_FORMATS:
        yield fetch(url, into)
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
