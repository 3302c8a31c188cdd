"""Warm models: a compiled model kept after its run, so the next run of the same architecture and
training settings skips tracing its train step.

Keras traces (builds the graph of) the train step on a model's first batch: 0.3-0.5 s on this
kind of machine, a third of a small run. A pipeline is typically run again and again (new data,
a retry, a schedule), so train keeps the last few models, keyed by everything that shapes their
graph, and hands one to the next matching run with *fresh* weights: the run's own newly built
model gives its initial weights and optimizer state, so training is exactly what a fresh model
would do; only the traced functions are reused.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict

import keras
import numpy as np

from cookline.settings import default
from cookline.v1 import pipeline_pb2

log = logging.getLogger("cookline.train")

# A model is called once more by each export (a node in its graph); retire it after this many runs.
MAX_RUNS = 100


def capacity() -> int:
    """COOKLINE_TRAIN_WARM_MODELS: compiled models kept between runs (default 2; 0 keeps none)."""
    raw = os.environ.get("COOKLINE_TRAIN_WARM_MODELS") or str(default("COOKLINE_TRAIN_WARM_MODELS"))
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"COOKLINE_TRAIN_WARM_MODELS must be a whole number, not {raw!r}") from None
    if not 0 <= value <= 64:
        raise ValueError("COOKLINE_TRAIN_WARM_MODELS must be between 0 and 64")
    return value


def key(spec: pipeline_pb2.TrainSpec, input_shape, num_classes: int, input_dtype: str, vocabulary_size: int) -> tuple:
    """What the model's graph depends on: models.build's arguments, minus the run-only settings."""
    shaping = pipeline_pb2.TrainSpec()
    shaping.CopyFrom(spec)
    for run_only in ("epochs", "batch_size", "early_stopping", "class_weights", "progress_every_batches", "seed"):
        shaping.ClearField(run_only)
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(int(d) for d in input_shape)
    return shaping.SerializeToString(deterministic=True), shape, num_classes, input_dtype, vocabulary_size


class WarmModels:
    """Up to capacity() compiled models, least recently used dropped first; thread-safe."""

    def __init__(self, size: int | None = None):
        self.size = capacity() if size is None else size
        self._models: OrderedDict[tuple, list[tuple[keras.Model, int]]] = OrderedDict()
        self._lock = threading.Lock()
        self.reused = 0  # how many runs got a warm model (logs and tests)

    def take(self, model_key: tuple, fresh: keras.Model) -> keras.Model:
        """A warm model of this key holding `fresh`'s weights and optimizer state, else `fresh`.

        The model is the caller's alone until it gives it back."""
        with self._lock:
            kept = self._models.get(model_key)
            warm, runs = kept.pop() if kept else (None, 0)
            if kept == []:
                del self._models[model_key]
        if warm is None:
            return fresh
        try:
            _copy_state(fresh, warm)
        except ValueError as exc:  # not the same variables after all: keep the fresh model
            log.warning("warm model not reused: %s", exc)
            return fresh
        warm._cookline_runs = runs + 1
        self.reused += 1
        log.info("reusing the traced train step of an earlier run (warm model, run %d)", runs + 1)
        return warm

    def give(self, model_key: tuple, model: keras.Model) -> None:
        """Keeps a model whose run ended cleanly, for the next run of the same key."""
        runs = getattr(model, "_cookline_runs", 0)
        if self.size == 0 or runs >= MAX_RUNS:
            return
        with self._lock:
            self._models.setdefault(model_key, []).append((model, runs))
            self._models.move_to_end(model_key)
            while sum(len(kept) for kept in self._models.values()) > self.size:
                oldest = next(iter(self._models))
                self._models[oldest].pop(0)
                if not self._models[oldest]:
                    del self._models[oldest]


def _copy_state(fresh: keras.Model, warm: keras.Model) -> None:
    """Sets `warm`'s weights and optimizer variables to `fresh`'s (its optimizer built, as fit would)."""
    for model in (fresh, warm):
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    if len(warm.weights) != len(fresh.weights) or len(warm.optimizer.variables) != len(fresh.optimizer.variables):
        raise ValueError("the models' variables differ")
    pairs = list(zip(warm.weights, fresh.weights, strict=True)) + list(
        zip(warm.optimizer.variables, fresh.optimizer.variables, strict=True)
    )
    if any(tuple(w.shape) != tuple(f.shape) for w, f in pairs):
        raise ValueError("the models' variables differ")
    for target, source in pairs:
        target.assign(np.asarray(source))
