"""CSV sources.

csv: typed columns (numeric -> "features" float32 [n, d], category ->
"categorical" str [n, k], free text -> "text" str [n], or [n, t] for several text
columns), a missing-value policy, a label column, with or without a header. A
column's kind is set by collect.column_kinds (or collect.categorical), else inferred
from the first INFER_ROWS rows (`infer_kind`; cookline.spec.sources holds the
rule). text-csv: pipcook's text format, `text,category` rows with no header ->
"text" str [n] and "label". Both stream the file in chunks: blocks of pyarrow.csv's reader,
handing over to the row reader where that one does not take the file as it is (csvread.py).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from cookline.spec.sources import (
    CATEGORY_MAX_CHARS,
    CATEGORY_MAX_WORDS,
    DELIMITERS,
    INFER_ROWS,
    MISSING_TEXTS,
    check_column_kinds,
    check_dialect,
    check_missing,
    is_number,
    number,
)
from services.collect.sources import csvread
from services.collect.sources.base import CHUNK_ROWS, Chunk, Labels, Source, single_file
from services.collect.sources.csvread import Dialect
from services.common.errors import invalid


def infer_kind(values: list[str], decimal: str = ".") -> str:
    """The kind of a column from its (stripped, present) values: "numeric" when every value is a
    number (or there is none), else "text" when a value is longer than CATEGORY_MAX_CHARS characters
    or has more than CATEGORY_MAX_WORDS words, else "category"."""
    if all(is_number(v, decimal) for v in values):
        return "numeric"
    if any(len(v) > CATEGORY_MAX_CHARS or len(v.split()) > CATEGORY_MAX_WORDS for v in values):
        return "text"
    return "category"


def class_ids(labels: Labels, codes: np.ndarray, names: list[str]) -> np.ndarray:
    """The class id of each row, from its code into `names` (a block's dictionary of label cells,
    stripped); new names get ids in order of first appearance, as row by row."""
    ids = np.zeros(len(names), np.int32)
    seen, first = np.unique(codes, return_index=True)
    for code in seen[np.argsort(first)]:
        ids[code] = labels.id(names[code])
    return ids[codes]


class CsvSource(Source):
    format = "csv"

    def __init__(self, spec, path: str):
        self.path = single_file(path, "csv")
        self.file_name = os.path.basename(self.path)
        self.missing = check_missing(spec.missing)
        self.fill_value = spec.fill_value
        self.no_header = spec.no_header
        self.dialect = Dialect(*check_dialect(spec.delimiter, spec.decimal))
        first = csvread.first_row(self.path, self.dialect)
        if not first:
            raise invalid(f"collect.source: {self.file_name} is empty (no rows)")
        if spec.no_header:
            names = list(spec.columns) or [f"column_{i}" for i in range(len(first))]
            if len(names) != len(first):
                raise invalid(
                    f"collect.columns: {len(names)} names given, but line 1 of {self.file_name} "
                    f"has {len(first)} columns{self._delimiter_hint(first, 'line 1')}"
                )
        else:
            if spec.columns:
                raise invalid("collect.columns: only for files with no_header: true (the header names them)")
            names = [h.strip() for h in first]
        self.header = names
        label = spec.label
        if not label:
            raise invalid("collect.label: required for csv (the name of the label column)")
        if label not in names:
            raise invalid(
                f"collect.label: column {label!r} is not in the {'columns' if spec.no_header else 'header'} "
                f"of {self.file_name} (columns: {', '.join(names)})"
                + self._delimiter_hint(first, "the header" if not spec.no_header else "line 1")
            )
        for name in spec.categorical:
            if name not in names or name == label:
                raise invalid(
                    f"collect.categorical: {name!r} is not a feature column of {self.file_name} "
                    f"(columns: {', '.join(names)})"
                )
        kinds = {name: "category" for name in spec.categorical}
        check_column_kinds(spec.column_kinds)
        for name, kind in sorted(spec.column_kinds.items()):
            if name not in names or name == label:
                raise invalid(
                    f"collect.column_kinds: {name!r} is not a feature column of {self.file_name} "
                    f"(columns: {', '.join(names)})"
                )
            if kinds.get(name, kind) != kind:
                raise invalid(f"collect.column_kinds.{name}: {kind!r}, but collect.categorical names it a category")
            kinds[name] = kind
        self.label_index = names.index(label)
        features = [i for i in range(len(names)) if i != self.label_index]
        unset = [i for i in features if names[i] not in kinds]
        if unset:
            kinds.update(self._infer(names, unset))
        self.kinds = {names[i]: kinds[names[i]] for i in features}
        self.numeric_index = [i for i in features if kinds[names[i]] == "numeric"]
        self.categorical_index = [i for i in features if kinds[names[i]] == "category"]
        self.text_index = [i for i in features if kinds[names[i]] == "text"]
        self.columns = [names[i] for i in self.numeric_index]
        self.categorical_columns = [names[i] for i in self.categorical_index]
        self.text_columns = [names[i] for i in self.text_index]
        if not features:
            raise invalid(f"collect.source: {self.file_name} has no feature columns besides {label!r}")
        self.labels = Labels()
        self.numeric_label = spec.numeric_label
        # a numeric label (regression) has no class names
        self.class_names = [] if self.numeric_label else self.labels.names
        self.image_shapes = {}

    def _delimiter_hint(self, first: list[str], what: str) -> str:
        """When the first row reads as one cell holding another delimiter: a hint naming collect.delimiter."""
        if len(first) != 1:
            return ""
        found = [d for d in DELIMITERS if d != self.dialect.delimiter and d in first[0]]
        if not found:
            return ""
        shown = {"\t": "'\\t' (tab)"}.get(found[0], repr(found[0]))
        return (
            f"; {what} reads as one column holding {shown} (collect.delimiter is {self.dialect.delimiter!r}): "
            f"set collect.delimiter: {shown.split(' ')[0]}"
        )

    def _infer(self, names: list[str], indices: list[int]) -> dict[str, str]:
        """Kinds of the columns at `indices`, from their present values in the first INFER_ROWS rows.

        When the block reader reads every one of them as numbers, they are all numeric. Else it reads
        those rows as strings; a column whose present cells all convert to numbers there is numeric,
        and the others get the row rule (`infer_kind`) on their cells. If the block reader stops, the
        row reader reads them."""
        skip_header = not self.no_header
        if csvread.all_numeric(self.path, self.dialect, len(names), skip_header, indices, INFER_ROWS):
            return {names[i]: "numeric" for i in indices}
        try:
            table = csvread.first_rows(self.path, self.dialect, len(names), skip_header, INFER_ROWS)
        except pa.ArrowInvalid:
            return self._infer_rows(names, indices)
        numeric = csvread.numeric_columns([table.column(i) for i in indices], self.dialect)
        kinds = {}
        for i, is_numeric in zip(indices, numeric, strict=True):
            if is_numeric:
                kinds[names[i]] = "numeric"
                continue
            values, missing = csvread.strings(table.column(i).combine_chunks())
            present = [v for v, m in zip(values, missing, strict=True) if not m]
            kinds[names[i]] = infer_kind(present, self.dialect.decimal)
        return kinds

    def _infer_rows(self, names: list[str], indices: list[int]) -> dict[str, str]:
        """_infer by the row reader."""
        seen: dict[int, list[str]] = {i: [] for i in indices}
        rows = csvread.rows(self.path, self.dialect, skip_header=not self.no_header)
        for count, (_line, row) in enumerate(rows):
            if count == INFER_ROWS:
                break
            for i in indices:
                text = row[i].strip() if i < len(row) else ""
                if text.lower() not in MISSING_TEXTS:
                    seen[i].append(text)
        return {names[i]: infer_kind(values, self.dialect.decimal) for i, values in seen.items()}

    def files(self):
        return [(self.file_name, self.path)]

    def _strings(self, row, indices, line_no) -> tuple[list[str], bool]:
        """The stripped cells of a string kind (category, text): missing ones are "" (or the row is
        dropped, or an error, per collect.missing). Returns (cells, dropped)."""
        cells = [row[i].strip() for i in indices]
        if not any(c.lower() in MISSING_TEXTS for c in cells):
            return cells, False
        if self.missing == "error":
            bad = next(i for i in indices if row[i].strip().lower() in MISSING_TEXTS)
            raise invalid(
                f"{self.file_name} line {line_no}, column {self.header[bad]!r}: the value is "
                f"missing (collect.missing: drop, fill or keep accept it)"
            )
        return [("" if c.lower() in MISSING_TEXTS else c) for c in cells], self.missing == "drop"

    def chunks(self) -> Iterator[Chunk]:
        types = {i: pa.float64() for i in self.numeric_index}
        if self.numeric_label:
            types[self.label_index] = pa.float64()
        rows = consumed = 0  # rows yielded; rows of the file the block reader has turned into chunks
        read = csvread.ahead(
            lambda: csvread.blocks(self.path, self.dialect, len(self.header), not self.no_header, types)
        )
        try:
            with contextlib.closing(read):  # on a break, or when this generator is closed: the reader's thread ends
                for block in read:
                    chunk = self._block(block)
                    if chunk is None:
                        break
                    consumed += block.num_rows
                    if len(chunk["label"]):
                        rows += len(chunk["label"])
                        yield chunk
                else:
                    consumed = -1  # the block reader read the whole file
        except pa.ArrowInvalid:
            pass  # the row reader takes over from row `consumed`, and says what is wrong
        if consumed >= 0:
            for chunk in self._row_chunks(consumed):
                rows += len(chunk["label"])
                yield chunk
        if rows == 0:
            raise invalid(f"collect.source: {self.file_name} has no data rows")

    def _block(self, block: pa.RecordBatch) -> Chunk | None:
        """The kept rows of one block of the file, or None where the row reader must take over: a
        missing value that is an error, a number that is not finite (the row reader reports them
        with their line)."""
        n, drop = block.num_rows, self.missing == "drop"
        keep = np.ones(n, bool)
        column = block.column(self.label_index)
        if self.numeric_label:
            label = column.to_numpy(zero_copy_only=False)
            if column.null_count:
                if not drop:
                    return None
                keep &= ~column.is_null().to_numpy(zero_copy_only=False)
            if not np.isfinite(label[keep]).all():
                return None
        else:
            encoded = column.dictionary_encode()
            codes = encoded.indices.to_numpy()
            names, absent = csvread.strings(encoded.dictionary)
            if absent.any():
                if not drop:
                    return None
                keep &= ~absent[codes]
        features = self._features(block, keep)
        if features is None:
            return None
        strings = []
        for i in self.categorical_index + self.text_index:
            values, absent = csvread.strings(block.column(i))
            if absent.any():
                if self.missing == "error":
                    return None
                if drop:
                    keep &= ~absent
                else:
                    values = ["" if a else v for v, a in zip(values, absent, strict=True)]
            strings.append(np.array(values, dtype=np.str_))
        every = keep.all()
        if self.numeric_label:
            labels = (label if every else label[keep]).astype(np.float32)
        else:
            labels = class_ids(self.labels, codes if every else codes[keep], names)
        chunk: Chunk = {"label": labels}
        if self.columns:
            chunk["features"] = features if every else features[keep]
        if self.categorical_columns:
            k = len(self.categorical_columns)
            chunk["categorical"] = np.stack([s if every else s[keep] for s in strings[:k]], axis=1)
        if self.text_columns:
            texts = [s if every else s[keep] for s in strings[len(self.categorical_columns) :]]
            chunk["text"] = texts[0] if len(texts) == 1 else np.stack(texts, axis=1)
        return chunk

    def _features(self, block: pa.RecordBatch, keep: np.ndarray) -> np.ndarray | None:
        """The numeric columns of a block as float32 [n, d], missing cells per collect.missing (fill:
        the fill value; keep: NaN; drop: their rows cleared in `keep`), or None where the row reader
        must take over: a missing value that is an error, a number that is not finite."""
        if not self.numeric_index:
            return np.empty((block.num_rows, 0), np.float32)
        # one row-major copy in C (NaN where a cell is missing), then float32 as the row reader stores them
        features = block.select(self.numeric_index).to_tensor(null_to_nan=True).to_numpy().astype(np.float32)
        if np.isfinite(features.sum(dtype=np.float64)):
            return features  # every cell present and finite: the common case, no column by column work
        nulls = [(j, column) for j, column in enumerate(block.select(self.numeric_index).columns) if column.null_count]
        if nulls and self.missing == "error":
            return None
        finite = np.isfinite(features)
        for j, column in nulls:
            null = column.is_null().to_numpy(zero_copy_only=False)
            finite[:, j] |= null
            if self.missing == "drop":
                keep &= ~null
            elif self.missing == "fill":
                features[null, j] = self.fill_value
        return features if finite.all() else None

    def _row_chunks(self, start: int) -> Iterator[Chunk]:
        """The row reader's chunks, from the `start`-th data row of the file."""
        width = len(self.header)
        features = np.empty((CHUNK_ROWS, len(self.columns)), dtype=np.float32)
        categorical: list[list[str]] = []
        texts: list[list[str]] = []
        labels = np.empty(CHUNK_ROWS, dtype=np.float32 if self.numeric_label else np.int32)
        n = 0
        for line_no, row in csvread.rows(self.path, self.dialect, not self.no_header, start):
            if len(row) != width:
                raise invalid(f"{self.file_name} line {line_no}: expected {width} columns, got {len(row)}")
            label = row[self.label_index].strip()
            if label.lower() in MISSING_TEXTS:
                if self.missing == "drop":
                    continue
                raise invalid(
                    f"{self.file_name} line {line_no}, column {self.header[self.label_index]!r}: the label is missing"
                )
            values = []
            dropped = False
            for i in self.numeric_index:
                text = row[i].strip()
                if text.lower() in MISSING_TEXTS:
                    if self.missing == "error":
                        raise invalid(
                            f"{self.file_name} line {line_no}, column {self.header[i]!r}: the value is "
                            f"missing (collect.missing: drop, fill or keep accept it)"
                        )
                    if self.missing == "drop":
                        dropped = True
                        break
                    values.append(self.fill_value if self.missing == "fill" else math.nan)
                    continue
                try:
                    value = number(text, self.dialect.decimal)
                except ValueError:
                    raise invalid(
                        f"{self.file_name} line {line_no}, column {self.header[i]!r}: "
                        "the value is not a number (the column is numeric; collect.column_kinds can "
                        "make it category or text" + self._decimal_hint() + ")"
                    ) from None  # cells are never quoted back
                if not math.isfinite(value):
                    raise invalid(
                        f"{self.file_name} line {line_no}, column {self.header[i]!r}: the value is not finite"
                    )
                values.append(value)
            if dropped:
                continue
            cats, dropped = self._strings(row, self.categorical_index, line_no)
            if dropped:
                continue
            words, dropped = self._strings(row, self.text_index, line_no)
            if dropped:
                continue
            features[n] = values
            categorical.append(cats)
            texts.append(words)
            labels[n] = self._number(label, line_no, self.label_index) if self.numeric_label else self.labels.id(label)
            n += 1
            if n == CHUNK_ROWS:
                yield self._chunk(features, categorical, texts, labels, n)
                n, categorical, texts = 0, [], []
        if n:
            yield self._chunk(features, categorical, texts, labels, n)

    def _decimal_hint(self) -> str:
        return "; collect.decimal is ','" if self.dialect.decimal == "," else ""

    def _number(self, text: str, line_no: int, index: int) -> float:
        try:
            value = number(text, self.dialect.decimal)
        except ValueError:
            raise invalid(
                f"{self.file_name} line {line_no}, column {self.header[index]!r}: the value is not a number"
                " (collect.numeric_label: true)"
            ) from None
        if not math.isfinite(value):
            raise invalid(f"{self.file_name} line {line_no}, column {self.header[index]!r}: the value is not finite")
        return value

    def _chunk(self, features, categorical, texts, labels, n) -> Chunk:
        chunk: Chunk = {"label": labels[:n].copy()}
        if self.columns:
            chunk["features"] = features[:n].copy()
        if self.categorical_columns:
            chunk["categorical"] = np.array(categorical, dtype=np.str_).reshape(n, len(self.categorical_columns))
        if self.text_columns:
            text = np.array(texts, dtype=np.str_).reshape(n, len(self.text_columns))
            chunk["text"] = text[:, 0].copy() if len(self.text_columns) == 1 else text
        return chunk


class TextCsvSource(Source):
    """pipcook's text format: `text,category` per row, no header."""

    format = "text-csv"

    def __init__(self, spec, path: str):
        self.path = single_file(path, "text-csv")
        self.file_name = os.path.basename(self.path)
        if os.path.getsize(self.path) == 0:
            raise invalid(f"collect.source: {self.file_name} is empty (no rows)")
        self.labels = Labels()
        self.class_names = self.labels.names
        self.image_shapes = {}

    def files(self):
        return [(self.file_name, self.path)]

    def chunks(self) -> Iterator[Chunk]:
        rows = consumed = 0  # as CsvSource.chunks
        read = csvread.ahead(lambda: csvread.blocks(self.path, Dialect(), 2, False, {}))
        try:
            with contextlib.closing(read):
                for block in read:
                    encoded = block.column(1).dictionary_encode()
                    names = [name.strip() for name in encoded.dictionary.to_pylist()]
                    if not all(names):
                        break  # a missing label: the row reader names its line
                    texts, _ = csvread.strings(block.column(0))
                    rows += block.num_rows
                    consumed += block.num_rows
                    yield {
                        "text": np.array(texts, dtype=np.str_),
                        "label": class_ids(self.labels, encoded.indices.to_numpy(), names),
                    }
                else:
                    consumed = -1
        except pa.ArrowInvalid:
            pass
        if consumed >= 0:
            for chunk in self._row_chunks(consumed):
                rows += len(chunk["label"])
                yield chunk
        if rows == 0:
            raise invalid(f"collect.source: {self.file_name} has no data rows")

    def _row_chunks(self, start: int) -> Iterator[Chunk]:
        texts: list[str] = []
        labels: list[int] = []
        for line_no, row in csvread.rows(self.path, Dialect(), False, start):
            if len(row) != 2:
                raise invalid(f"{self.file_name} line {line_no}: expected 2 columns (text,category), got {len(row)}")
            text, label = row[0].strip(), row[1].strip()
            if not label:
                raise invalid(f"{self.file_name} line {line_no}, column 'category': the label is missing")
            texts.append(text)
            labels.append(self.labels.id(label))
            if len(texts) == CHUNK_ROWS:
                yield {"text": np.array(texts, dtype=np.str_), "label": np.array(labels, dtype=np.int32)}
                texts, labels = [], []
        if texts:
            yield {"text": np.array(texts, dtype=np.str_), "label": np.array(labels, dtype=np.int32)}
