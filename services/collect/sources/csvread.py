"""Reading CSV text two ways, with one dialect: a fast block reader and an exact row reader.

The dialect: one delimiter character (collect.delimiter), '"' quoting with doubled quotes inside,
quoted cells may span lines, a UTF-8 BOM skipped, blank rows skipped; numbers are read as
Python's float() reads them, with collect.decimal as the decimal separator.

- `blocks`: pyarrow.csv's streaming reader (`open_csv`), a block of about BLOCK_ROWS rows at a time,
  so memory stays bounded however large the file is. Numeric columns are converted in C.
- `rows`: Python's csv module, row by row, with each row's line number.

The CSV sources read with `blocks` (parsing on a thread of its own, `ahead`, while theirs converts
the batches and writes the shards) and fall back to `rows`, from the first row not yet turned
into a chunk, on anything the block reader does not take as it is: a malformed row, a cell
that is not a number, a missing value where none is allowed, text with surrounding spaces,
bytes that are not UTF-8. The row reader then reads on, or raises the precise error naming
the line and column. So what is ingested, and every message, is what the row reader gives;
the block reader makes the common case fast. Error messages never quote a cell.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import mmap
import os
import queue
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from cookline.spec.sources import MISSING_TEXTS
from services.collect.sources.base import _STREAMS, open_binary, open_text

# Bytes of the file the block reader parses at a time: about BLOCK_ROWS rows, within
# [MIN_BLOCK_BYTES, BLOCK_BYTES]. A block, its parsed cells and its converted columns are in
# memory at once; the blocks pyarrow reads ahead are views of a local file (`_Mapped`).
BLOCK_ROWS = 8192
MIN_BLOCK_BYTES = 1 << 20
BLOCK_BYTES = 2 << 20
# Batches the reader's thread (`ahead`) may have parsed and not yet handed over.
AHEAD_BATCHES = 2


def _case_variants(word: str) -> set[str]:
    return {"".join(chars) for chars in itertools.product(*({c.lower(), c.upper()} for c in word))}


# Cells the block reader reads as null in a numeric column: MISSING_TEXTS in every letter case.
# (A missing text with spaces around it is not among them: that cell goes to the row reader.)
NULLS = sorted(set().union(*(_case_variants(text) for text in MISSING_TEXTS)))


@dataclass(frozen=True)
class Dialect:
    delimiter: str = ","
    decimal: str = "."


def first_row(path: str, dialect: Dialect) -> list[str] | None:
    """The cells of the file's first row (the header, or the first data row), None for an empty file."""
    with open_text(path) as f:
        return next(csv.reader(f, delimiter=dialect.delimiter), None)


def rows(path: str, dialect: Dialect, skip_header: bool, start: int = 0) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank data row, from the `start`-th one (0: the first)."""
    with open_text(path) as f:
        reader = csv.reader(f, delimiter=dialect.delimiter)

        def data_rows():
            skip = skip_header
            for row in reader:
                if skip:
                    skip = False
                    continue
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                yield reader.line_num, row

        yield from itertools.islice(data_rows(), start, None)


def _skip_blank(row) -> str:
    """pyarrow's invalid-row handler: a row of spaces is blank (skipped, as the row reader does);
    any other row with the wrong number of cells stops the block reader."""
    return "skip" if not row.text.strip() else "error"


class _Mapped:
    """A local file as pyarrow's reader reads it: a memory map, so each block it reads, and the up
    to 32 blocks it reads ahead on its own (a queue of that length, not an option), are views of the
    file instead of copies (with 8 MB blocks those copies were 256 MB of collect's memory). The
    pages of the blocks whose batches have been taken are dropped from the process as it goes
    (`took`): they stay in the page cache, and are read again from there if touched again."""

    def __init__(self, path: str, block_bytes: int):
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.block_bytes, self.taken, self.dropped = block_bytes, 0, 0
        self.source = pa.BufferReader(pa.py_buffer(self.map) if self.map is not None else b"")

    def took(self) -> None:
        """After a batch is taken: the pages before the block of the batch before it are dropped."""
        self.taken += 1
        end = (self.taken - 1) * self.block_bytes // mmap.PAGESIZE * mmap.PAGESIZE
        if self.map is not None and end > self.dropped:
            self.map.madvise(mmap.MADV_DONTNEED, self.dropped, end - self.dropped)
            self.dropped = end


class _Streamed:
    """A stream (an s3:// object) as pyarrow's reader reads it, through its Python file."""

    def __init__(self, raw):
        self.source = raw

    def took(self) -> None:
        pass


@contextlib.contextmanager
def _reader(
    path: str, dialect: Dialect, width: int, skip_header: bool, block_bytes: int, types, threads: bool = True
) -> Iterator[tuple[pa_csv.CSVStreamingReader, _Mapped | _Streamed]]:
    names = [f"c{i}" for i in range(width)]
    with contextlib.ExitStack() as opened:
        source = (
            _Mapped(path, block_bytes) if path not in _STREAMS else _Streamed(opened.enter_context(open_binary(path)))
        )
        reader = pa_csv.open_csv(
            source.source,
            read_options=pa_csv.ReadOptions(
                column_names=names, skip_rows=1 if skip_header else 0, block_size=block_bytes, use_threads=threads
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=dialect.delimiter,
                quote_char='"',
                double_quote=True,
                escape_char=False,
                newlines_in_values=True,
                ignore_empty_lines=True,
                invalid_row_handler=_skip_blank,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=None if types is None else {names[i]: types.get(i, pa.string()) for i in range(width)},
                null_values=NULLS,
                strings_can_be_null=False,
                decimal_point=dialect.decimal,
            ),
        )
        with reader:
            yield reader, source


def blocks(
    path: str, dialect: Dialect, width: int, skip_header: bool, types: dict[int, pa.DataType]
) -> Generator[pa.RecordBatch, None, None]:
    """The file's data rows as record batches of columns c0, c1, ... (cells of `width` columns):
    column i typed types[i] (numeric ones null for a missing cell), else a string.
    Raises pyarrow.ArrowInvalid where the block reader stops (see the module's doc)."""
    block = int(min(max(row_bytes(path) * BLOCK_ROWS, MIN_BLOCK_BYTES), BLOCK_BYTES))
    with _reader(path, dialect, width, skip_header, block, types) as (reader, source):
        for batch in reader:
            source.took()
            yield batch


class _Failed:
    """What ended the reader's thread: raised where the items stopped."""

    def __init__(self, error: BaseException):
        self.error = error


_END = object()
T = TypeVar("T")


def ahead(items: Callable[[], Generator[T, None, None]], depth: int = AHEAD_BATCHES) -> Generator[T, None, None]:
    """The items of the generator items() in order, made on a thread of its own, at most `depth` of
    them waiting: pyarrow parses a block without the GIL, so parsing the next blocks overlaps what
    the caller does with this one (converting, statistics, hashing and writing shards). What the
    generator raises is raised here after the items before it, as if it ran here. When this
    generator stops early (closed, or an exception thrown into it: the caller broke off, failed or
    was cancelled), the thread stops at its next item, closes the generator (its file) and is
    joined before this one returns: no thread outlives the read."""
    queued: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        last: object = _END
        try:
            with contextlib.closing(items()) as made:
                for item in made:
                    if stop.is_set():
                        return
                    queued.put(item)
        except BaseException as error:  # handed to the caller, which raises it
            last = _Failed(error)
        if not stop.is_set():
            queued.put(last)

    thread = threading.Thread(target=produce, name="cookline-csv-reader", daemon=True)
    thread.start()
    try:
        while (item := queued.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        # After `stop`, the thread puts at most one more item (one it had checked `stop` for): with
        # the queue emptied here that put never blocks, so the join cannot hang.
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                queued.get_nowait()
        thread.join()


def row_bytes(path: str) -> float:
    """The mean bytes of a row, from the file's first 64 KB."""
    with open_binary(path) as f:
        sample = f.read(1 << 16)
    return len(sample) / max(1, sample.count(b"\n"))


def first_rows(path: str, dialect: Dialect, width: int, skip_header: bool, count: int) -> pa.Table:
    """The file's first `count` data rows (or all, if fewer), every column a string. Raises
    pyarrow.ArrowInvalid where the block reader stops."""
    batches, rows = [], 0
    for batch in blocks(path, dialect, width, skip_header, {}):
        batches.append(batch.slice(0, count - rows))
        rows += batches[-1].num_rows
        if rows == count:
            break
    return (
        pa.Table.from_batches(batches)
        if batches
        else pa.table({f"c{i}": pa.array([], pa.string()) for i in range(width)})
    )


def all_numeric(path: str, dialect: Dialect, width: int, skip_header: bool, indices: list[int], count: int) -> bool:
    """True when the block reader reads the columns at `indices` of the file's first `count` data rows
    as numbers, every cell a number or one of NULLS: then each of those columns is numeric by the rule
    of `numeric_columns` too, without reading their cells as strings. False says nothing about any
    one column (the reader stops at the first cell it cannot take, and may read past `count` rows)."""
    rows = 0
    try:
        for batch in blocks(path, dialect, width, skip_header, {i: pa.float64() for i in indices}):
            rows += batch.num_rows
            if rows >= count:
                break
    except pa.ArrowInvalid:
        return False
    return True


def numeric_columns(columns: list[pa.ChunkedArray], dialect: Dialect, group: int = 64) -> list[bool]:
    """For each string column: True when every present cell (stripped; not one of MISSING_TEXTS) is a
    number as pyarrow reads one. False may still be numbers to Python's float(): the caller applies
    the row rule to those. Checked `group` columns at once (bounding the copies), then by halves
    where that fails."""
    if len(columns) > group:
        return [ok for lo in range(0, len(columns), group) for ok in numeric_columns(columns[lo : lo + group], dialect)]
    if not columns:
        return []
    cells = pa.chunked_array([chunk for column in columns for chunk in column.chunks], pa.string())
    trimmed = pc.utf8_trim_whitespace(cells)
    present = trimmed.filter(pc.invert(pc.is_in(pc.utf8_lower(trimmed), value_set=pa.array(sorted(MISSING_TEXTS)))))
    ok = True
    if dialect.decimal != ".":
        ok = not pc.any(pc.match_substring(present, ".")).as_py()
        present = pc.replace_substring(present, dialect.decimal, ".")
    if ok:
        try:
            pc.cast(present, pa.float64())
            return [True] * len(columns)
        except pa.ArrowInvalid:
            pass
    if len(columns) == 1:
        return [False]
    half = len(columns) // 2
    return numeric_columns(columns[:half], dialect) + numeric_columns(columns[half:], dialect)


def strings(column: pa.Array) -> tuple[list[str], np.ndarray]:
    """A string column's cells stripped, and which are missing (MISSING_TEXTS)."""
    cells = [text.strip() for text in column.to_pylist()]
    return cells, np.fromiter((c.lower() in MISSING_TEXTS for c in cells), bool, len(cells))
