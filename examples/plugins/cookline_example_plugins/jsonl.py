"""The jsonl source: one JSON object per line -> "features" float32 [n, d] and "label" (class ids)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np

from cookline.spec import SpecError

CHUNK_ROWS = 4096


class JsonLinesSource:
    """Reads `path` (a .jsonl file, or a folder holding exactly one) in chunks of rows."""

    def __init__(self, params: dict, path: str):
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if not n.startswith("."))
            if len(names) != 1:
                raise SpecError(f"collect.source: jsonl needs one file, {path!r} holds {len(names)}")
            path = os.path.join(path, names[0])
        self.path, self.name = path, os.path.basename(path)
        self.label = params["label"]
        self.columns: list[str] = list(params["features"])
        self.class_names: list[str] = []

    def files(self) -> list[tuple[str, str]]:
        return [(self.name, self.path)]

    def _objects(self) -> Iterator[tuple[int, dict]]:
        with open(self.path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SpecError(f"{self.name} line {line_no}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise SpecError(f"{self.name} line {line_no}: expected a JSON object")
                yield line_no, row

    def chunks(self) -> Iterator[dict[str, np.ndarray]]:
        ids: dict[str, int] = {}
        features: list[list[float]] = []
        labels: list[int] = []
        for line_no, row in self._objects():
            if self.label not in row:
                raise SpecError(f"{self.name} line {line_no}: no {self.label!r} key (collect.label)")
            if not self.columns:
                self.columns = [k for k in row if k != self.label]
            try:
                features.append([float(row[k]) for k in self.columns])
            except (KeyError, TypeError, ValueError):
                raise SpecError(
                    f"{self.name} line {line_no}: needs a number for each of {', '.join(self.columns)}"
                ) from None
            name = str(row[self.label])
            labels.append(ids.setdefault(name, len(ids)))
            if name not in self.class_names:
                self.class_names.append(name)
            if len(labels) == CHUNK_ROWS:
                yield self._chunk(features, labels)
                features, labels = [], []
        if labels:
            yield self._chunk(features, labels)
        elif not ids:
            raise SpecError(f"collect.source: {self.name} has no rows")

    @staticmethod
    def _chunk(features, labels) -> dict[str, np.ndarray]:
        return {"features": np.array(features, dtype=np.float32), "label": np.array(labels, dtype=np.int32)}
