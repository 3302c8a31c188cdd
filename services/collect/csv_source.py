"""CSV source: a header row, numeric feature columns and one label column.

Rows are read as a stream, in chunks, so a file larger than memory never is
held whole. Label strings become class ids in order of first appearance.
"""
from __future__ import annotations

import csv
import math
import os
from typing import Iterator

import numpy as np

from services.common.errors import invalid


class CsvSource:
    """Reads `path` as chunks of (features float32 [n, d], label int32 [n])."""

    def __init__(self, path: str, label: str, chunk_rows: int):
        self.path = path
        self.file_name = os.path.basename(path)
        self.chunk_rows = chunk_rows
        self.class_names: list[str] = []
        self._class_ids: dict[str, int] = {}
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None)
        if not header:
            raise invalid(f"collect.source: {self.file_name} is empty (no header row)")
        self.header = [h.strip() for h in header]
        if not label:
            raise invalid("collect.label: required for csv (the name of the label column)")
        if label not in self.header:
            raise invalid(
                f"collect.label: column {label!r} is not in the header of {self.file_name} "
                f"(columns: {', '.join(self.header)})"
            )
        self.label_index = self.header.index(label)
        self.columns = [h for i, h in enumerate(self.header) if i != self.label_index]
        if not self.columns:
            raise invalid(f"collect.source: {self.file_name} has no feature columns besides {label!r}")

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        width = len(self.header)
        features = np.empty((self.chunk_rows, len(self.columns)), dtype=np.float32)
        labels = np.empty(self.chunk_rows, dtype=np.int32)
        n = 0
        rows = 0
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            next(reader)  # header
            for line_no, row in enumerate(reader, start=2):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) != width:
                    raise invalid(f"{self.file_name} line {line_no}: expected {width} columns, got {len(row)}")
                label = row[self.label_index].strip()
                if not label:
                    raise invalid(f"{self.file_name} line {line_no}: the label column is empty")
                values = row[: self.label_index] + row[self.label_index + 1:]
                for j, text in enumerate(values):
                    try:
                        value = float(text)
                    except ValueError:
                        raise invalid(
                            f"{self.file_name} line {line_no}, column {self.columns[j]!r}: "
                            f"{text!r} is not a number"
                        ) from None
                    if not math.isfinite(value):
                        raise invalid(f"{self.file_name} line {line_no}, column {self.columns[j]!r}: {text!r} is not finite")
                    features[n, j] = value
                class_id = self._class_ids.get(label)
                if class_id is None:
                    class_id = self._class_ids[label] = len(self.class_names)
                    self.class_names.append(label)
                labels[n] = class_id
                n += 1
                rows += 1
                if n == self.chunk_rows:
                    yield features.copy(), labels.copy()
                    n = 0
        if rows == 0:
            raise invalid(f"collect.source: {self.file_name} has a header but no data rows")
        if n:
            yield features[:n].copy(), labels[:n].copy()
