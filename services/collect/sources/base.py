"""What every source shares: the Source interface, class-name lookups, file listings."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np

from services.common.errors import invalid

Chunk = dict[str, np.ndarray]
# Rows per chunk a source yields (tabular / text); images use fewer.
CHUNK_ROWS = 4096


# Paths that stand for streams rather than files (s3:// objects read without a local copy, see
# sources/s3.py): path -> a function opening a fresh seekable binary stream of the object.
_STREAMS: dict[str, Callable[[], BinaryIO]] = {}


def open_binary(path: str) -> BinaryIO:
    """The file at `path` opened for reading, or a fresh stream of the object standing behind it."""
    opener = _STREAMS.get(path)
    return opener() if opener is not None else open(path, "rb")  # the caller closes it


def open_text(path: str):
    """open_binary as CSV text (UTF-8, a BOM skipped, newlines left to the csv module)."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", newline="")


@contextlib.contextmanager
def streamed(openers: dict[str, Callable[[], BinaryIO]]):
    """Within the block, each path of `openers` opens as its stream (paths are unique per ingest)."""
    _STREAMS.update(openers)
    try:
        yield
    finally:
        for path in openers:
            _STREAMS.pop(path, None)


class Source:
    """One input, read as bounded chunks of rows.

    After `chunks()` is exhausted, `class_names` names the label ids and
    `columns` / `categorical_columns` / `text_columns` name the positions of
    "features", "categorical" and (csv) "text". `files()` lists what the content address is computed from.
    """

    format = ""
    class_names: list[str]
    columns: list[str] = []
    categorical_columns: list[str] = []
    text_columns: list[str] = []
    image_shapes: dict[str, int]
    # True when the source assigns rows to train/validation/test itself ("subset" chunks).
    predefined_split = False

    def files(self) -> list[tuple[str, str]]:
        """(name relative to the source, absolute path) of every input file, in a fixed order."""
        raise NotImplementedError

    def chunks(self) -> Iterator[Chunk]:
        raise NotImplementedError


class Labels:
    """Class names -> ids, in order of first appearance (or a fixed, given order)."""

    def __init__(self, names: list[str] | None = None):
        self.names: list[str] = list(names or [])
        self.ids = {n: i for i, n in enumerate(self.names)}

    def id(self, name: str) -> int:
        found = self.ids.get(name)
        if found is None:
            found = self.ids[name] = len(self.names)
            self.names.append(name)
        return found


def single_file(path: str, fmt: str) -> str:
    """`path` itself, or the one file inside a folder (an s3:// prefix of one object)."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if not n.startswith("."))
        if len(names) != 1 or not os.path.isfile(os.path.join(path, names[0])):
            raise invalid(f"collect.source: {fmt} needs one file, but {path!r} is a folder with {len(names)} entries")
        return os.path.join(path, names[0])
    return path
