"""Scaling of "features": standardize, min_max, fill_missing (fitted on the TRAIN rows)."""
from __future__ import annotations

import grpc
import numpy as np

from services.common.errors import Fail
from services.common.moments import merge
from services.process.ops.base import OpKind, fitted, need


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
        self.count, self.mean, self.m2 = merge(self.count, self.mean, self.m2, n, mean, m2)

    @property
    def variance(self) -> np.ndarray:
        return self.m2 / self.count


def _features(batch, where) -> np.ndarray:
    features = need(batch, "features", where)
    if features.ndim != 2:
        raise Fail(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: 'features' has shape {list(features.shape)}, "
                                                     f"expected [rows, columns]")
    return features


def _no_missing(features: np.ndarray, where: str) -> None:
    if features.dtype.kind == "f" and np.isnan(features).any():
        raise Fail(grpc.StatusCode.INVALID_ARGUMENT,
                   f"{where}: 'features' has missing (NaN) values; put a fill_missing op before it")


def _check_width(features, width, where):
    if features.shape[1] != width:
        raise Fail(grpc.StatusCode.INVALID_ARGUMENT,
                   f"{where}: fitted on {width} feature columns, got {features.shape[1]}")


class _MomentsFitter:
    def __init__(self, where):
        self.where, self.moments = where, Moments()

    def add(self, batch):
        features = _features(batch, self.where)
        _no_missing(features, self.where)
        self.moments.add(features)

    def done(self):
        return {"mean": self.moments.mean, "variance": self.moments.variance}


class Standardize(OpKind):
    name = "standardize"

    def fitter(self, op, where):
        return _MomentsFitter(where)

    def apply(self, op, where, batches, epoch, training):
        mean, variance = fitted(op, where, "mean", "variance")
        mean = mean.astype(np.float32)
        std = np.sqrt(variance).astype(np.float32)
        std[std == 0] = 1.0  # a constant column stays 0 rather than becoming NaN
        for batch in batches:
            features = _features(batch, where)
            _check_width(features, len(mean), where)
            yield {**batch, "features": (features - mean) / std}


class _RangeFitter:
    def __init__(self, where):
        self.where, self.lo, self.hi = where, None, None

    def add(self, batch):
        features = _features(batch, self.where)
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
        return _RangeFitter(where)

    def apply(self, op, where, batches, epoch, training):
        lo, hi = fitted(op, where, "min", "max")
        lo = lo.astype(np.float32)
        span = (hi - lo).astype(np.float32)
        span[span == 0] = 1.0
        for batch in batches:
            features = _features(batch, where)
            _check_width(features, len(lo), where)
            yield {**batch, "features": (features - lo) / span}


class _NanMeanFitter:
    def __init__(self, where):
        self.where, self.total, self.count = where, None, None

    def add(self, batch):
        features = _features(batch, self.where).astype(np.float64)
        seen = ~np.isnan(features)
        total, count = np.where(seen, features, 0).sum(axis=0), seen.sum(axis=0)
        self.total = total if self.total is None else self.total + total
        self.count = count if self.count is None else self.count + count

    def done(self):
        if self.count is not None and (self.count == 0).any():
            column = int(np.argmin(self.count))
            raise Fail(grpc.StatusCode.FAILED_PRECONDITION,
                       f"{self.where}: feature column {column} has no value in the training split to take the mean of")
        return {"value": self.total / self.count}


class FillMissing(OpKind):
    name = "fill_missing"

    def fitter(self, op, where):
        return _NanMeanFitter(where) if self.settings(op, where)["strategy"] == "mean" else None

    def apply(self, op, where, batches, epoch, training):
        constant = self.settings(op, where)["strategy"] == "constant"
        value = None if constant else fitted(op, where, "value")[0].astype(np.float32)
        for batch in batches:
            features = _features(batch, where)
            nan = np.isnan(features)
            if nan.any():
                if constant:
                    features = np.where(nan, np.float32(op.fill_missing.value), features)
                else:
                    _check_width(features, len(value), where)
                    features = np.where(nan, value, features)
            yield {**batch, "features": features}
