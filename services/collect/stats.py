"""Dataset statistics (computed while ingesting, streaming) and schema validation
of a new version against the previous one (TFX StatisticsGen / ExampleValidator style)."""

from __future__ import annotations

import re

import numpy as np

from cookline.v1 import data_pb2
from services.common.moments import merge

TOKEN = re.compile(r"\w+")
MAX_LISTED_VALUES = 1000
SUBSET_NAMES = {data_pb2.SUBSET_TRAIN: "train", data_pb2.SUBSET_VALIDATION: "validation", data_pb2.SUBSET_TEST: "test"}


def tokens(text: str) -> list[str]:
    """The tokens of a text: lowercased runs of word characters (shared with vectorize_text)."""
    return TOKEN.findall(text.lower())


def _byte_counts(values: np.ndarray) -> np.ndarray:
    """np.bincount(values, minlength=256) of uint8 values, counted as pairs (uint16, 65536 bins, then
    folded): half the elements to widen and scatter, which is most of bincount's time."""
    values = np.ascontiguousarray(values)
    even = len(values) // 2 * 2
    pairs = np.bincount(values[:even].view(np.uint16), minlength=1 << 16).reshape(256, 256)
    counts = pairs.sum(axis=0) + pairs.sum(axis=1)  # each uint16 holds two bytes: one per axis
    if even < len(values):
        counts[values[-1]] += 1
    return counts


class _Numeric:
    """count / missing / min / max / mean / std of the columns of a [n, k] array (Chan's merge)."""

    def __init__(self, names: list[str]):
        k = len(names)
        self.names = names
        self.count = np.zeros(k, np.int64)
        self.missing = np.zeros(k, np.int64)
        self.min = np.full(k, np.inf)
        self.max = np.full(k, -np.inf)
        self.mean = np.zeros(k)
        self.m2 = np.zeros(k)

    def add(self, x: np.ndarray) -> None:
        x = x.reshape(len(x), -1) if x.ndim != 2 else x
        if x.dtype.kind == "f" and np.isnan(x.sum(dtype=np.float64)):  # one pass when nothing is NaN
            nan = np.isnan(x)
            if nan.any():
                self.missing += nan.sum(axis=0)
                gaps = nan.any(axis=0)
                for j in np.flatnonzero(gaps).tolist():  # columns with a NaN, one by one
                    self._merge(j, x[~nan[:, j], j])
                self._merge_columns(np.flatnonzero(~gaps), x[:, ~gaps])  # the others at once
                return
        n = len(x)
        if n == 0:
            return
        if x.dtype == np.uint8 and x.shape[1] == 1:  # image pixels: from their histogram, no float copy
            counts = _byte_counts(x.reshape(-1))
            values = np.arange(256.0)
            mean = counts @ values / n
            seen = np.flatnonzero(counts)
            m2 = counts @ (values - mean) ** 2
            self._merge_all(n, np.array([mean]), np.array([m2]), values[seen[:1]], values[seen[-1:]])
            return
        self._merge_all(n, *self._moments(x))

    @staticmethod
    def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(mean, m2, min, max) of the columns of a [n, k] array (n > 0), in float64."""
        lo, hi = x.min(axis=0), x.max(axis=0)  # in x's own dtype: the same values, fewer bytes read
        x64 = x.astype(np.float64)  # a copy, made into the squared deviations in place
        mean = x64.mean(axis=0)
        np.subtract(x64, mean, out=x64)
        np.square(x64, out=x64)
        return mean, x64.sum(axis=0), lo.astype(np.float64), hi.astype(np.float64)

    def _merge_columns(self, columns: np.ndarray, x: np.ndarray) -> None:
        """_merge of each column at `columns` (indices) with its values in x [n, len(columns)], all at
        once and to the same bits: each column's sums run along it, as _merge's do."""
        if not len(columns) or not len(x):
            return
        v = np.ascontiguousarray(x.T, dtype=np.float64)  # a row per column: sums along a row, as of one array
        mean = v.mean(axis=1)
        m2 = ((v - mean[:, None]) ** 2).sum(axis=1)
        lo, hi = v.min(axis=1), v.max(axis=1)
        self.count[columns], self.mean[columns], self.m2[columns] = merge(
            (self.count[columns], self.mean[columns], self.m2[columns]), (len(x), mean, m2)
        )
        low, high = self.min[columns], self.max[columns]  # and as _merge's min() and max() pick
        self.min[columns] = np.where(lo < low, lo, low)
        self.max[columns] = np.where(hi > high, hi, high)

    def _merge(self, j: int, values: np.ndarray) -> None:
        if len(values) == 0:
            return
        v = values.astype(np.float64)
        n, mean = len(v), v.mean()
        m2 = ((v - mean) ** 2).sum()
        self.count[j], self.mean[j], self.m2[j] = merge((self.count[j], self.mean[j], self.m2[j]), (n, mean, m2))
        self.min[j] = min(self.min[j], v.min())
        self.max[j] = max(self.max[j], v.max())

    def _merge_all(self, n, mean, m2, lo, hi) -> None:
        self.count, self.mean, self.m2 = merge((self.count, self.mean, self.m2), (n, mean, m2))
        self.min = np.minimum(self.min, lo)
        self.max = np.maximum(self.max, hi)

    def messages(self) -> list[data_pb2.NumericStatistics]:
        out = []
        for j, name in enumerate(self.names):
            seen = self.count[j] > 0
            out.append(
                data_pb2.NumericStatistics(
                    name=name,
                    count=int(self.count[j]),
                    missing=int(self.missing[j]),
                    min=float(self.min[j]) if seen else 0.0,
                    max=float(self.max[j]) if seen else 0.0,
                    mean=float(self.mean[j]) if seen else 0.0,
                    std=float(np.sqrt(self.m2[j] / self.count[j])) if seen else 0.0,
                )
            )
        return out


class StatisticsBuilder:
    """Accumulates DatasetStatistics chunk by chunk; memory is bounded by distinct values."""

    def __init__(self):
        self.numeric: dict[str, _Numeric] = {}
        self.categorical: list[dict] = []
        self.label_counts: dict[int, int] = {}
        self.split_counts: dict[str, int] = {}
        self.text = None

    def add(self, chunk: dict[str, np.ndarray], columns: list[str], categorical_columns: list[str]) -> None:
        for name, array in chunk.items():
            if name == "label" and array.dtype.kind == "f":
                continue  # a numeric label (regression): no class counts
            if name == "label":
                ids, counts = np.unique(array, return_counts=True)
                for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
                    self.label_counts[i] = self.label_counts.get(i, 0) + c
            elif name == "subset":
                ids, counts = np.unique(array, return_counts=True)
                for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
                    key = SUBSET_NAMES[i]
                    self.split_counts[key] = self.split_counts.get(key, 0) + c
            elif name == "categorical":
                self._add_categorical(array, categorical_columns)
            elif name == "text":
                self._add_text(array)
            elif array.dtype.kind in "fiub":
                if name not in self.numeric:
                    if name == "features" and array.ndim == 2 and len(columns) == array.shape[1]:
                        names = list(columns)
                    elif array.ndim == 2:
                        names = [f"{name}[{j}]" for j in range(array.shape[1])]
                    else:  # a scalar per row, or images: one entry over every value
                        names = [name]
                    self.numeric[name] = _Numeric(names)
                stats = self.numeric[name]
                stats.add(array if len(stats.names) > 1 or array.ndim == 2 else array.reshape(-1, 1))

    def _add_categorical(self, array: np.ndarray, names: list[str]) -> None:
        if not self.categorical:
            self.categorical = [{"name": n, "count": 0, "missing": 0, "seen": {}} for n in names]
        for j, column in enumerate(self.categorical):
            for value in array[:, j].tolist():
                if value == "":
                    column["missing"] += 1
                    continue
                column["count"] += 1
                column["seen"][value] = column["seen"].get(value, 0) + 1

    def _add_text(self, array: np.ndarray) -> None:
        if self.text is None:
            self.text = {"count": 0, "min": None, "max": 0, "total": 0, "vocabulary": set()}
        if array.ndim == 2:  # several text columns: a row's cells are one text (as vectorize_text sees them)
            array = np.array([" ".join(row) for row in array.tolist()], dtype=object)
        for text in array.tolist():
            words = tokens(text)
            t = self.text
            t["count"] += 1
            t["min"] = len(words) if t["min"] is None else min(t["min"], len(words))
            t["max"] = max(t["max"], len(words))
            t["total"] += len(words)
            t["vocabulary"].update(words)

    def build(self, class_names: list[str], image_shapes: dict[str, int]) -> data_pb2.DatasetStatistics:
        out = data_pb2.DatasetStatistics()
        for stats in self.numeric.values():
            out.numeric.extend(stats.messages())
        for column in self.categorical:
            out.categorical.add(
                name=column["name"],
                count=column["count"],
                missing=column["missing"],
                unique=len(column["seen"]),
                values=list(column["seen"])[:MAX_LISTED_VALUES],
            )
        for class_id, count in self.label_counts.items():
            name = class_names[class_id] if class_id < len(class_names) else str(class_id)
            out.label_counts[name] = count
        out.image_shapes.update(image_shapes)
        out.split_counts.update(self.split_counts)
        if self.text is not None:
            t = self.text
            out.text.CopyFrom(
                data_pb2.TextStatistics(
                    count=t["count"],
                    min_tokens=t["min"] or 0,
                    max_tokens=t["max"],
                    mean_tokens=t["total"] / t["count"] if t["count"] else 0.0,
                    vocabulary_size=len(t["vocabulary"]),
                )
            )
        return out


def anomalies(previous: data_pb2.DatasetInfo, current: data_pb2.DatasetInfo) -> list[data_pb2.SchemaAnomaly]:
    """How `current` departs from the schema and seen ranges of `previous`."""
    found: list[data_pb2.SchemaAnomaly] = []

    def add(kind, field, message):
        found.append(data_pb2.SchemaAnomaly(kind=kind, field=field, message=message))

    before = {f.name: f for f in previous.fields}
    after = {f.name: f for f in current.fields}
    version = f"{previous.ref.name}@{previous.ref.version}"
    for name, old in before.items():
        new = after.get(name)
        if new is None:
            add("missing_field", name, f"{name!r} is missing; version {version} has it")
            continue
        if new.dtype != old.dtype:
            add("dtype_changed", name, f"{name!r} is {_dtype(new.dtype)}; version {version} has {_dtype(old.dtype)}")
        if list(new.columns) or list(old.columns):
            for column in old.columns:
                if column not in new.columns:
                    add(
                        "missing_column",
                        f"{name}.{column}",
                        f"column {column!r} of {name!r} is missing; version {version} has it",
                    )
            for column in new.columns:
                if column not in old.columns:
                    add(
                        "new_column",
                        f"{name}.{column}",
                        f"column {column!r} of {name!r} is new since version {version}",
                    )
        elif list(new.shape) != list(old.shape):
            add(
                "shape_changed",
                name,
                f"{name!r} has shape {list(new.shape)} per row; version {version} has {list(old.shape)}",
            )
        if name == "label":
            for cls in new.class_names:
                if cls not in old.class_names:
                    add("new_class", "label", f"class {cls!r} is new since version {version}")
    for name in after:
        if name not in before:
            add("new_field", name, f"{name!r} is new since version {version}")
    old_numeric = {s.name: s for s in previous.statistics.numeric}
    for stats in current.statistics.numeric:
        old_num = old_numeric.get(stats.name)
        if old_num is None or not old_num.count or not stats.count:
            continue
        if stats.min < old_num.min or stats.max > old_num.max:
            add(
                "out_of_range",
                _numeric_field(stats.name),
                f"{stats.name!r} ranges over [{stats.min:g}, {stats.max:g}]; version {version} saw "
                f"[{old_num.min:g}, {old_num.max:g}]",
            )
    old_categorical = {c.name: c for c in previous.statistics.categorical}
    for cat_stats in current.statistics.categorical:
        old_cat = old_categorical.get(cat_stats.name)
        if old_cat is None or len(old_cat.values) >= MAX_LISTED_VALUES:
            continue
        new_values = [v for v in cat_stats.values if v not in set(old_cat.values)]
        if new_values:
            add(
                "new_category",
                f"categorical.{cat_stats.name}",
                f"column {cat_stats.name!r} has values not seen in version {version}: "
                f"{', '.join(map(repr, new_values[:5]))}",
            )
    return found


def _numeric_field(name: str) -> str:
    return name if name.startswith(("image", "features")) or "[" in name else f"features.{name}"


def _dtype(code: int) -> str:
    from cookline import tensors

    return tensors.dtype_name(code)
