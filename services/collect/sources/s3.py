"""s3://bucket/prefix sources: objects that already sit in the object store.

Every object under the prefix is copied, one at a time, into a local folder
(keys relative to the prefix become paths), which the format's source then
reads as it would a local file or folder. A prefix naming one object gives
that one file.
"""
from __future__ import annotations

import os
import re

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
