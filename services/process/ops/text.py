"""vectorize_text: "text" (strings [n]) -> "features" (bag of words) or "tokens" (id sequences).

Tokens are lowercased runs of word characters (the same as collect's text
statistics). The vocabulary is the most frequent tokens of the TRAIN rows
(ties in token order). Layout as Keras' TextVectorization: for multi_hot,
count and tf_idf, column 0 is the unknown-token column and vocabulary entry i
is column i + 1; for int, 0 is padding, 1 unknown and entry i is id i + 2.
tf_idf weights a count by idf = log(1 + rows / (1 + rows containing the token)).
"""
from __future__ import annotations

import numpy as np

from services.collect.stats import tokens
from services.process.ops.base import OpKind, fitted, need


def _texts(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values.reshape(-1).tolist()]


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
        ranked = sorted(self.counts.items(), key=lambda wc: (-wc[1], wc[0]))[:self.limit]
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
                    row = [index.get(w, -1) + 2 for w in tokens(text)][:length]
                    ids[r, :len(row)] = row
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
                out["features"] = counts
            yield out
