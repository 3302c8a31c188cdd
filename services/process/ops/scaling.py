"""Scaling of "features": standardize, min_max, fill_missing (fitted on the TRAIN rows).

Each can be scoped to some numeric columns (`columns`, names of the dataset's numeric
columns); the process service resolves them to positions, stored as the fitted "indices".
The other columns pass through untouched. Each op's `graph` is its form inside the
exported model, the same float32 arithmetic as `apply`.
"""

from __future__ import annotations

import grpc
import numpy as np

from services.common.errors import Fail
from services.common.moments import merge
from services.process.ops.base import OpKind, fitted, graph_fn, need


class Moments:
    """Streaming mean/variance per column (Chan et al.'s parallel merge, float64)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float64, copy=False)
        n = len(x)
        if n == 0:
            return
        mean = x.mean(axis=0)
        m2 = ((x - mean) ** 2).sum(axis=0)
        self.count, self.mean, self.m2 = merge((self.count, self.mean, self.m2), (n, mean, m2))

    @property
    def variance(self) -> np.ndarray:
        return self.m2 / self.count


def _features(batch, where) -> np.ndarray:
    features = need(batch, "features", where)
    if features.ndim != 2:
        raise Fail(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{where}: 'features' has shape {list(features.shape)}, expected [rows, columns]",
        )
    return features


def _no_missing(features: np.ndarray, where: str) -> None:
    if features.dtype.kind == "f" and np.isnan(features).any():
        raise Fail(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{where}: 'features' has missing (NaN) values; put a fill_missing op before it",
        )


def scope(op, where: str, feature_columns: list[str] | None) -> None:
    """Resolves the op's `columns` (numeric column names) to positions, stored as fitted "indices";
    INVALID_ARGUMENT naming the field for a name that is not a numeric column."""
    from cookline import tensors

    names = list(OpKind.params(op).columns)
    if not names:
        return
    known = list(feature_columns or [])
    positions = []
    for name in names:
        if name not in known:
            raise Fail(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{where}.columns: {name!r} is not a numeric column of the dataset "
                f"(numeric columns: {', '.join(known) or 'none'})",
            )
        positions.append(known.index(name))
    tensors.from_numpy(np.array(positions, dtype=np.int64), out=op.fitted["indices"])


def _indices(op, width: int) -> np.ndarray:
    """The positions the op works on: its fitted "indices", else every column."""
    if "indices" in op.fitted:
        from cookline import tensors

        return tensors.to_numpy(op.fitted["indices"]).astype(np.int64)
    return np.arange(width)


def _scoped(op, batch, where) -> np.ndarray:
    features = _features(batch, where)
    return features[:, _indices(op, features.shape[1])] if "indices" in op.fitted else features


def _full(op, values: np.ndarray, width: int, fill: float) -> np.ndarray:
    """Per-column values over the whole width: `values` at the op's positions, `fill` elsewhere."""
    if "indices" not in op.fitted:
        return values
    out = np.full(width, fill, dtype=values.dtype)
    out[_indices(op, width)] = values
    return out


def _affine_graph(op, shift: np.ndarray, scale: np.ndarray, where: str):
    """(x - shift) / scale on "features" in the graph; unscoped columns get shift 0, scale 1 (unchanged)."""
    import tensorflow as tf

    def fn(tensors):
        x = tf.cast(tensors["features"], tf.float32)
        width = int(x.shape[1])
        if "indices" not in op.fitted:
            _check_width(len(shift), width, where)
        return {**tensors, "features": (x - _full(op, shift, width, 0.0)) / _full(op, scale, width, 1.0)}

    return graph_fn(fn)


def _check_width(expected, got, where):
    if expected != got:
        raise Fail(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: fitted on {expected} feature columns, got {got}")


class _MomentsFitter:
    def __init__(self, op, where):
        self.op, self.where, self.moments = op, where, Moments()

    def add(self, batch):
        features = _scoped(self.op, batch, self.where)
        _no_missing(features, self.where)
        self.moments.add(features)

    def done(self):
        return {"mean": self.moments.mean, "variance": self.moments.variance}


def _affine_apply(op, where, batches, shift, scale):
    for batch in batches:
        features = _features(batch, where)
        if "indices" not in op.fitted:
            _check_width(len(shift), features.shape[1], where)
        width = features.shape[1]
        yield {**batch, "features": (features - _full(op, shift, width, 0.0)) / _full(op, scale, width, 1.0)}


class Standardize(OpKind):
    name = "standardize"

    def fitter(self, op, where):
        return _MomentsFitter(op, where)

    @staticmethod
    def _fitted(op, where):
        mean, variance = fitted(op, where, "mean", "variance")
        std = np.sqrt(variance).astype(np.float32)
        std[std == 0] = 1.0  # a constant column stays 0 rather than becoming NaN
        return mean.astype(np.float32), std

    def apply(self, op, where, batches, epoch, training):
        return _affine_apply(op, where, batches, *self._fitted(op, where))

    def graph(self, op, where):
        return _affine_graph(op, *self._fitted(op, where), where)


class _RangeFitter:
    def __init__(self, op, where):
        self.op, self.where, self.lo, self.hi = op, where, None, None

    def add(self, batch):
        features = _scoped(self.op, batch, self.where)
        _no_missing(features, self.where)
        if len(features):
            lo, hi = features.min(axis=0).astype(np.float64), features.max(axis=0).astype(np.float64)
            self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
            self.hi = hi if self.hi is None else np.maximum(self.hi, hi)

    def done(self):
        return {"min": self.lo, "max": self.hi}


class MinMax(OpKind):
    name = "min_max"

    def fitter(self, op, where):
        return _RangeFitter(op, where)

    @staticmethod
    def _fitted(op, where):
        lo, hi = fitted(op, where, "min", "max")
        span = (hi - lo).astype(np.float32)
        span[span == 0] = 1.0
        return lo.astype(np.float32), span

    def apply(self, op, where, batches, epoch, training):
        return _affine_apply(op, where, batches, *self._fitted(op, where))

    def graph(self, op, where):
        return _affine_graph(op, *self._fitted(op, where), where)


class _NanMeanFitter:
    def __init__(self, op, where):
        self.op, self.where, self.total, self.count = op, where, None, None

    def add(self, batch):
        features = _scoped(self.op, batch, self.where).astype(np.float64)
        seen = ~np.isnan(features)
        total, count = np.where(seen, features, 0).sum(axis=0), seen.sum(axis=0)
        self.total = total if self.total is None else self.total + total
        self.count = count if self.count is None else self.count + count

    def done(self):
        if self.count is not None and (self.count == 0).any():
            column = int(np.argmin(self.count))
            raise Fail(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{self.where}: feature column {column} has no value in the training split to take the mean of",
            )
        return {"value": self.total / self.count}


class FillMissing(OpKind):
    name = "fill_missing"

    def fitter(self, op, where):
        return _NanMeanFitter(op, where) if self.settings(op, where)["strategy"] == "mean" else None

    def _values(self, op, where, width: int) -> np.ndarray:
        """The fill value of every column: NaN where the op is not scoped (NaN stays NaN there)."""
        if self.settings(op, where)["strategy"] == "constant":
            return _full(op, np.full(len(_indices(op, width)), op.fill_missing.value, np.float32), width, np.nan)
        value = fitted(op, where, "value")[0].astype(np.float32)
        if "indices" not in op.fitted:
            _check_width(len(value), width, where)
        return _full(op, value, width, np.nan)

    def apply(self, op, where, batches, epoch, training):
        for batch in batches:
            features = _features(batch, where)
            nan = np.isnan(features)
            if nan.any():
                features = np.where(nan, self._values(op, where, features.shape[1]), features)
            yield {**batch, "features": features}

    def graph(self, op, where):
        import tensorflow as tf

        def fn(tensors):
            x = tf.cast(tensors["features"], tf.float32)
            return {**tensors, "features": tf.where(tf.math.is_nan(x), self._values(op, where, int(x.shape[1])), x)}

        return graph_fn(fn)
