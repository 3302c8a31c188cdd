"""Categorical columns ("categorical", strings [n, k]) to numbers appended to "features":
lookup (one id column per categorical column) and one_hot (one column per seen value + unseen).

The vocabulary of each column is fitted on the TRAIN rows, most frequent values
first (ties in order of value), and stored flat: "vocabulary" (strings) with
"columns" (the categorical column of each entry). `graph` is each op inside the
exported model: one lookup table per column (the same ids, 0 for a value not in the
vocabulary: the out-of-vocabulary bucket), then the same float columns.
"""

from __future__ import annotations

import numpy as np

from services.common.errors import invalid
from services.process.ops.base import OpKind, fitted, graph_fn, need


def _text(values: np.ndarray) -> np.ndarray:
    """Categorical cells as str (they arrive as bytes objects from the wire)."""
    if values.dtype == object:
        return np.array(
            [v.decode() if isinstance(v, bytes) else str(v) for v in values.reshape(-1)], dtype=np.str_
        ).reshape(values.shape)
    return values.astype(np.str_)


class _VocabularyFitter:
    def __init__(self, where, limit: int, min_count: int):
        self.where, self.limit, self.min_count = where, limit, min_count
        self.counts: list[dict[str, int]] | None = None

    def add(self, batch):
        values = _text(need(batch, "categorical", self.where))
        if self.counts is None:
            self.counts = [{} for _ in range(values.shape[1])]
        for j, counts in enumerate(self.counts):
            uniques, n = np.unique(values[:, j], return_counts=True)
            for value, c in zip(uniques.tolist(), n.tolist(), strict=True):
                if value != "":  # a missing category is never a vocabulary entry
                    counts[value] = counts.get(value, 0) + c

    def done(self):
        vocabulary, columns = [], []
        for j, counts in enumerate(self.counts or []):
            ranked = sorted((v for v in counts.items() if v[1] >= self.min_count), key=lambda vc: (-vc[1], vc[0]))
            if self.limit:
                ranked = ranked[: self.limit]
            vocabulary += [v for v, _ in ranked]
            columns += [j] * len(ranked)
        return {"vocabulary": np.array(vocabulary, dtype=object), "columns": np.array(columns, dtype=np.int64)}


def _tables(op, where) -> list[dict[str, int]]:
    vocabulary, columns = fitted(op, where, "vocabulary", "columns")
    if len(columns) == 0:
        return []  # nothing seen: every value maps to 0 ("unseen")
    tables: list[dict[str, int]] = [{} for _ in range(int(columns.max()) + 1)]
    for value, column in zip(vocabulary.tolist(), columns.tolist(), strict=True):
        table = tables[column]
        table[value.decode() if isinstance(value, bytes) else value] = len(table) + 1  # 0 means unseen
    return tables


def _ids(values: np.ndarray, tables, where) -> np.ndarray:
    """[n, k] ids: 1.. for vocabulary values, 0 for anything else."""
    values = _text(values)
    if len(tables) > values.shape[1]:
        raise invalid(f"{where}: fitted on {len(tables)} categorical columns, got {values.shape[1]}")
    ids = np.zeros(values.shape, dtype=np.int64)
    for j, table in enumerate(tables):
        ids[:, j] = [table.get(v, 0) for v in values[:, j].tolist()]
    return ids


def _append(batch, new_columns: np.ndarray) -> dict:
    out = {k: v for k, v in batch.items() if k != "categorical"}
    if "features" in out:
        out["features"] = np.concatenate([out["features"].astype(np.float32, copy=False), new_columns], axis=1)
    else:
        out["features"] = new_columns
    return out


def _graph_tables(op, where):
    """One TF lookup table per fitted column (value -> id from 1; anything else -> 0)."""
    import tensorflow as tf

    tables = []
    for table in _tables(op, where):
        if not table:
            tables.append(None)
            continue
        keys = tf.constant(list(table), tf.string)
        ids = tf.constant(list(table.values()), tf.int64)
        tables.append(tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, ids), 0))
    return tables


def _graph_ids(values, tables, where) -> list:
    """[rows] int64 ids of each categorical column (cells stripped, as collect stores them)."""
    import tensorflow as tf

    width = int(values.shape[1])
    if len(tables) > width:
        raise invalid(f"{where}: fitted on {len(tables)} categorical columns, got {width}")
    values = tf.strings.strip(values)
    out = []
    for j in range(width):
        table = tables[j] if j < len(tables) else None
        column = values[:, j]
        out.append(tf.zeros_like(column, tf.int64) if table is None else table.lookup(column))
    return out


def _graph_append(tensors, new_columns):
    import tensorflow as tf

    out = {k: v for k, v in tensors.items() if k != "categorical"}
    out["features"] = (
        tf.concat([tf.cast(out["features"], tf.float32), new_columns], axis=1) if "features" in out else new_columns
    )
    return out


class Lookup(OpKind):
    name = "lookup"

    def fitter(self, op, where):
        return _VocabularyFitter(where, self.settings(op, where)["max_values"], 1)

    def apply(self, op, where, batches, epoch, training):
        tables = _tables(op, where)
        for batch in batches:
            ids = _ids(need(batch, "categorical", where), tables, where)
            yield _append(batch, ids.astype(np.float32))

    def graph(self, op, where):
        import tensorflow as tf

        tables = _graph_tables(op, where)

        def fn(tensors):
            ids = _graph_ids(tensors["categorical"], tables, where)
            return _graph_append(tensors, tf.cast(tf.stack(ids, axis=1), tf.float32))

        return graph_fn(fn, *[t for t in tables if t is not None])


class OneHot(OpKind):
    name = "one_hot"

    def fitter(self, op, where):
        return _VocabularyFitter(where, 0, self.settings(op, where)["min_count"])

    def apply(self, op, where, batches, epoch, training):
        tables = _tables(op, where)
        widths = [len(t) + 1 for t in tables]
        offsets = np.cumsum([0] + widths[:-1]).astype(np.int64)
        for batch in batches:
            ids = _ids(need(batch, "categorical", where), tables, where)[:, : len(tables)]
            out = np.zeros((len(ids), sum(widths)), dtype=np.float32)
            if len(ids) and tables:
                out[np.arange(len(ids))[:, None], ids + offsets] = 1.0
            yield _append(batch, out)

    def graph(self, op, where):
        import tensorflow as tf

        tables = _graph_tables(op, where)
        widths = [len(t) + 1 for t in _tables(op, where)]

        def fn(tensors):
            ids = _graph_ids(tensors["categorical"], tables, where)[: len(tables)]
            rows = tf.shape(tensors["categorical"])[0]
            parts = [tf.one_hot(i, w, dtype=tf.float32) for i, w in zip(ids, widths, strict=True)]
            return _graph_append(tensors, tf.concat(parts, axis=1) if parts else tf.zeros([rows, 0], tf.float32))

        return graph_fn(fn, *[t for t in tables if t is not None])
