"""CSV sources.

csv: typed columns (numeric -> "features" float32 [n, d], category ->
"categorical" str [n, k], free text -> "text" str [n], or [n, t] for several text
columns), a missing-value policy, a label column, with or without a header. A
column's kind is set by collect.column_kinds (or collect.categorical), else inferred
from the first INFER_ROWS rows (`infer_kind`; cookline.spec.sources holds the
rule). text-csv: pipcook's text format, `text,category` rows with no header ->
"text" str [n] and "label". Both stream the file in chunks.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator

import numpy as np

from cookline.spec.sources import (
    CATEGORY_MAX_CHARS,
    CATEGORY_MAX_WORDS,
    INFER_ROWS,
    MISSING_TEXTS,
    check_column_kinds,
    check_missing,
    is_number,
)
from services.collect.sources.base import CHUNK_ROWS, Chunk, Labels, Source, open_text, single_file
from services.common.errors import invalid


def _rows(path: str, skip_header: bool) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank row."""
    with open_text(path) as f:
        reader = csv.reader(f)
        for row in reader:
            if skip_header:
                skip_header = False
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            yield reader.line_num, row


def infer_kind(values: list[str]) -> str:
    """The kind of a column from its (stripped, present) values: "numeric" when every value is a
    number (or there is none), else "text" when a value is longer than CATEGORY_MAX_CHARS characters
    or has more than CATEGORY_MAX_WORDS words, else "category"."""
    if all(is_number(v) for v in values):
        return "numeric"
    if any(len(v) > CATEGORY_MAX_CHARS or len(v.split()) > CATEGORY_MAX_WORDS for v in values):
        return "text"
    return "category"


class CsvSource(Source):
    format = "csv"

    def __init__(self, spec, path: str):
        self.path = single_file(path, "csv")
        self.file_name = os.path.basename(self.path)
        self.missing = check_missing(spec.missing)
        self.fill_value = spec.fill_value
        self.no_header = spec.no_header
        with open_text(self.path) as f:
            first = next(csv.reader(f), None)
        if not first:
            raise invalid(f"collect.source: {self.file_name} is empty (no rows)")
        if spec.no_header:
            names = list(spec.columns) or [f"column_{i}" for i in range(len(first))]
            if len(names) != len(first):
                raise invalid(
                    f"collect.columns: {len(names)} names given, but line 1 of {self.file_name} "
                    f"has {len(first)} columns"
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

    def _infer(self, names: list[str], indices: list[int]) -> dict[str, str]:
        """Kinds of the columns at `indices`, from their present values in the first INFER_ROWS rows."""
        seen: dict[int, list[str]] = {i: [] for i in indices}
        for count, (_line, row) in enumerate(_rows(self.path, skip_header=not self.no_header)):
            if count == INFER_ROWS:
                break
            for i in indices:
                text = row[i].strip() if i < len(row) else ""
                if text.lower() not in MISSING_TEXTS:
                    seen[i].append(text)
        return {names[i]: infer_kind(values) for i, values in seen.items()}

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
        width = len(self.header)
        features = np.empty((CHUNK_ROWS, len(self.columns)), dtype=np.float32)
        categorical: list[list[str]] = []
        texts: list[list[str]] = []
        labels = np.empty(CHUNK_ROWS, dtype=np.float32 if self.numeric_label else np.int32)
        n = rows = 0
        for line_no, row in _rows(self.path, skip_header=not self.no_header):
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
                    value = float(text)
                except ValueError:
                    raise invalid(
                        f"{self.file_name} line {line_no}, column {self.header[i]!r}: "
                        "the value is not a number (the column is numeric; collect.column_kinds can "
                        "make it category or text)"
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
            rows += 1
            if n == CHUNK_ROWS:
                yield self._chunk(features, categorical, texts, labels, n)
                n, categorical, texts = 0, [], []
        if rows == 0:
            raise invalid(f"collect.source: {self.file_name} has no data rows")
        if n:
            yield self._chunk(features, categorical, texts, labels, n)

    def _number(self, text: str, line_no: int, index: int) -> float:
        try:
            value = float(text)
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
        texts: list[str] = []
        labels: list[int] = []
        rows = 0
        for line_no, row in _rows(self.path, skip_header=False):
            if len(row) != 2:
                raise invalid(f"{self.file_name} line {line_no}: expected 2 columns (text,category), got {len(row)}")
            text, label = row[0].strip(), row[1].strip()
            if not label:
                raise invalid(f"{self.file_name} line {line_no}, column 'category': the label is missing")
            texts.append(text)
            labels.append(self.labels.id(label))
            rows += 1
            if len(texts) == CHUNK_ROWS:
                yield {"text": np.array(texts, dtype=np.str_), "label": np.array(labels, dtype=np.int32)}
                texts, labels = [], []
        if rows == 0:
            raise invalid(f"collect.source: {self.file_name} has no data rows")
        if texts:
            yield {"text": np.array(texts, dtype=np.str_), "label": np.array(labels, dtype=np.int32)}
