"""vectorize_text: "text" (strings [n], or [n, t] for several text columns, whose
cells are joined with a space) -> "features" (bag of words, appended to any numeric
"features") or "tokens" (id sequences).

Tokens are lowercased runs of word characters (the same as collect's text
statistics; `graph_tokens` is the same rule in TensorFlow, for the exported model).
The vocabulary is the most frequent tokens of the TRAIN rows (ties in token order).
Layout as Keras' TextVectorization: for multi_hot, count and tf_idf, column 0 is the unknown-token column and
vocabulary entry i is column i + 1; for int, 0 is padding, 1 unknown and entry i is id i + 2 (a text
without any token is one unknown token, never padding alone).
tf_idf weights a count by idf = log(1 + rows / (1 + rows containing the token)).
"""

from __future__ import annotations

import numpy as np

from services.collect.stats import tokens
from services.process.ops.base import OpKind, fitted, graph_fn, need


def _texts(values: np.ndarray) -> list[str]:
    """One text per row: the cell, or a row's cells joined with a space ([n, t])."""
    rows = values.reshape(len(values), -1).tolist()
    return [" ".join(v.decode() if isinstance(v, bytes) else str(v) for v in row) for row in rows]


# A word character of Python's `re` (str.isalnum() or "_"), as RE2 writes it.
_NOT_WORD = r"[^\p{L}\p{N}_]+"
UNKNOWN_ID = 1  # mode int: the id of a token outside the vocabulary


def graph_tokens(text):
    """services.collect.stats.tokens in TensorFlow: string [rows] (or [rows, t], joined with a
    space) -> ragged [rows, None] tokens, lowercased runs of word characters."""
    import tensorflow as tf

    if text.shape.rank == 2:
        text = tf.strings.reduce_join(text, axis=1, separator=" ")
    lowered = tf.strings.lower(text, encoding="utf-8")
    return tf.strings.split(tf.strings.strip(tf.strings.regex_replace(lowered, _NOT_WORD, " ")))


class _TokenFitter:
    def __init__(self, where, limit):
        self.where, self.limit = where, limit
        self.counts: dict[str, int] = {}
        self.docs: dict[str, int] = {}
        self.rows = 0

    def add(self, batch):
        for text in _texts(need(batch, "text", self.where)):
            words = tokens(text)
            self.rows += 1
            for w in words:
                self.counts[w] = self.counts.get(w, 0) + 1
            for w in set(words):
                self.docs[w] = self.docs.get(w, 0) + 1

    def done(self):
        ranked = sorted(self.counts.items(), key=lambda wc: (-wc[1], wc[0]))[: self.limit]
        vocabulary = [w for w, _ in ranked]
        idf = np.log1p(self.rows / (1.0 + np.array([self.docs[w] for w in vocabulary], dtype=np.float64)))
        return {"vocabulary": np.array(vocabulary, dtype=object), "idf": idf}


class VectorizeText(OpKind):
    name = "vectorize_text"

    def fitter(self, op, where):
        return _TokenFitter(where, self.settings(op, where)["max_tokens"])

    def apply(self, op, where, batches, epoch, training):
        settings = self.settings(op, where)
        mode = settings["mode"]
        vocabulary, idf = fitted(op, where, "vocabulary", "idf")
        index = {(w.decode() if isinstance(w, bytes) else w): i for i, w in enumerate(vocabulary.tolist())}
        length = settings["sequence_length"]
        weights = np.concatenate([[idf.mean() if len(idf) else 0.0], idf]).astype(np.float32)
        for batch in batches:
            texts = _texts(need(batch, "text", where))
            out = {k: v for k, v in batch.items() if k != "text"}
            if mode == "int":
                ids = np.zeros((len(texts), length), dtype=np.int64)
                for r, text in enumerate(texts):
                    # a text without tokens is one unknown token: a sequence of padding alone would
                    # leave the text model's masked average 0 / 0
                    row = [index.get(w, -1) + 2 for w in tokens(text)][:length] or [UNKNOWN_ID]
                    ids[r, : len(row)] = row
                out["tokens"] = ids
            else:
                counts = np.zeros((len(texts), len(index) + 1), dtype=np.float32)
                for r, text in enumerate(texts):
                    for w in tokens(text):
                        counts[r, index.get(w, -1) + 1] += 1
                if mode == "multi_hot":
                    counts = np.minimum(counts, 1.0)
                elif mode == "tf_idf":
                    counts *= weights
                out["features"] = (
                    np.concatenate([out["features"].astype(np.float32, copy=False), counts], axis=1)
                    if "features" in out
                    else counts
                )
            yield out

    def graph(self, op, where):
        import tensorflow as tf

        settings = self.settings(op, where)
        mode = settings["mode"]
        vocabulary, idf = fitted(op, where, "vocabulary", "idf")
        words = [w.decode() if isinstance(w, bytes) else w for w in vocabulary.tolist()]
        length = settings["sequence_length"]
        weights = np.concatenate([[idf.mean() if len(idf) else 0.0], idf]).astype(np.float32)
        size = len(words) + 1
        table = (
            tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(words, tf.string), tf.range(len(words), dtype=tf.int64)
                ),
                -1,
            )
            if words
            else None
        )

        def fn(tensors):
            found = graph_tokens(tensors["text"])
            index = (
                found.with_flat_values(table.lookup(found.flat_values))
                if table is not None
                else tf.ragged.map_flat_values(lambda t: tf.fill(tf.shape(t), tf.constant(-1, tf.int64)), found)
            )
            out = {k: v for k, v in tensors.items() if k != "text"}
            if mode == "int":
                ids = (index + 2).to_tensor(default_value=0, shape=[None, length])
                first = tf.where(index.row_lengths() > 0, ids[:, 0], tf.constant(UNKNOWN_ID, tf.int64))
                out["tokens"] = tf.concat([first[:, None], ids[:, 1:]], axis=1)  # as apply(): no all-padding row
                return out
            rows = tf.shape(index.row_lengths(), out_type=tf.int64)[0]
            at = tf.stack([index.value_rowids(), index.flat_values + 1], axis=1)
            counts = tf.scatter_nd(at, tf.ones_like(index.flat_values, tf.float32), tf.stack([rows, size]))
            if mode == "multi_hot":
                counts = tf.minimum(counts, 1.0)
            elif mode == "tf_idf":
                counts = counts * weights
            out["features"] = (
                tf.concat([tf.cast(out["features"], tf.float32), counts], axis=1) if "features" in out else counts
            )
            return out

        return graph_fn(fn, *([table] if table is not None else []))
