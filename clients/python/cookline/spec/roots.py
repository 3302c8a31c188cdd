"""Local sources stay inside the configured source roots (COOKLINE_SOURCE_ROOTS), and where a
relative collect.source resolves.

A client may name any path in collect.source, so every local path is checked before
anything under it is opened: a '..' component, an absolute path outside the roots, and a
symlink (the path itself, a folder on the way, or a file inside a source folder) that
leads out of them are PERMISSION_DENIED naming collect.source. Only the path's location is
checked (realpath: lstat and readlink), never its contents.
"""

from __future__ import annotations

import os

from cookline import config, settings
from cookline.spec.errors import SourceDenied, SourceNotFound

FIELD = "collect.source"


def denied(message: str, field: str = FIELD) -> SourceDenied:
    return SourceDenied(message, field)


def has_parent_step(source: str) -> bool:
    """True when the path has a '..' component."""
    return ".." in source.replace(os.sep, "/").split("/")


def _under(real: str, folder: str) -> bool:
    return real == folder or real.startswith(folder.rstrip(os.sep) + os.sep)


def store_folder() -> str:
    """The local object store's folder (COOKLINE_DATA_DIR): never a source, even inside a root, so no
    client can ingest another dataset's shards or a model's files through a path."""
    return os.path.realpath(
        os.path.expanduser(os.environ.get("COOKLINE_DATA_DIR") or settings.default("COOKLINE_DATA_DIR"))
    )


def inside(path: str, roots: list[str]) -> bool:
    """True when `path`, symlinks resolved, is one of `roots` or lies under one, and is not in the local
    object store's folder."""
    real = os.path.realpath(path)
    return any(_under(real, root) for root in roots) and not _under(real, store_folder())


def check(path: str, roots: list[str] | None = None, field: str = FIELD) -> str:
    """`path` (absolute, as collect reads it) if it stays inside the roots; PERMISSION_DENIED otherwise."""
    roots = config.source_roots() if roots is None else roots
    if has_parent_step(path):
        raise denied(
            f"{field}: {path!r} has a '..' component; local sources must stay inside the source roots "
            "(COOKLINE_SOURCE_ROOTS); upload data from elsewhere",
            field,
        )
    if not inside(path, roots):
        raise denied(
            f"{field}: {path!r} is outside the source roots (COOKLINE_SOURCE_ROOTS: "
            f"{os.pathsep.join(roots)}), a symlink leads out of them, or it is in the object store's "
            "folder (train on a stored dataset with collect.dataset); upload data from elsewhere",
            field,
        )
    return path


def check_tree(path: str, roots: list[str] | None = None, field: str = FIELD) -> None:
    """Every entry under a source folder stays inside the roots (a symlink in the folder may point out)."""
    roots = config.source_roots() if roots is None else roots
    if not os.path.isdir(path):
        return
    # Only symlinks are resolved one by one: below the folder's own real path, every other entry's real
    # path is that path plus the entry's relative path (symlinked folders are not walked into), so it
    # is inside the roots when the folder is, unless it lies in the object store's folder.
    real_root = os.path.realpath(path)
    root_inside = any(_under(real_root, root) for root in roots)
    store = store_folder()
    for dirpath, dirs, files in os.walk(path):  # symlinked folders are entries, not walked into
        real_dir = os.path.normpath(os.path.join(real_root, os.path.relpath(dirpath, path)))
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                ok = inside(full, roots)
            else:
                ok = root_inside and not _under(os.path.join(real_dir, name), store)
            if not ok:
                rel = os.path.relpath(full, path)
                raise denied(
                    f"{field}: {rel!r} inside {path!r} is a symlink leading outside the source roots "
                    "(COOKLINE_SOURCE_ROOTS)",
                    field,
                )


def resolve(source: str, base_dir: str, roots: list[str] | None = None, field: str = FIELD) -> str:
    """Absolute path of a local source, inside the source roots (`roots`, default COOKLINE_SOURCE_ROOTS).

    An absolute path must lie inside the roots, existing or not. A relative one resolves against
    base_dir first, then the working directory; a candidate folder outside the roots is passed
    over without looking at it, so no answer tells whether a path outside them exists.
    SourceDenied (PERMISSION_DENIED) naming collect.source (or `field`) for a '..' component, an absolute path
    outside the roots, or a symlink leading out of them. Nothing is opened. A source that exists
    nowhere resolves under the working directory (`require` reports it NOT_FOUND).
    """
    if "://" in source:
        return source
    allowed = config.source_roots() if roots is None else roots
    if has_parent_step(source) or os.path.isabs(source):
        return check(os.path.abspath(source) if os.path.isabs(source) else source, allowed, field)
    candidates = [os.path.abspath(os.path.join(base_dir, source))] if base_dir else []
    candidates.append(os.path.abspath(source))
    for candidate in candidates:
        folder = os.path.dirname(candidate)
        if not any(_under(candidate, root) or _under(os.path.realpath(folder), root) for root in allowed):
            continue  # not looked at
        if os.path.lexists(candidate):
            return check(candidate, allowed, field)
    return candidates[-1]


def require(source: str, roots: list[str] | None = None, field: str = FIELD) -> None:
    """SourceNotFound (NOT_FOUND) naming collect.source when a local source does not exist on this
    machine, so SubmitRun answers at once and a client elsewhere knows to upload instead; SourceDenied
    when a symlink inside a source folder leads out of the roots. `field`: the setting named (train.base
    is a local path too)."""
    if not source or "://" in source:
        return
    if not os.path.lexists(source):
        raise SourceNotFound(
            f"{field}: {source!r} not found on the services' machine; a client on another "
            "machine uploads its data (cookline upload; cookline run does it by itself)",
            field,
        )
    check_tree(source, roots, field)
