"""Two narrow, version-pinned fixes that make Keras 3's `model.fit` train under
`tf.distribute.MultiWorkerMirroredStrategy` (keras-team/keras#20585).

As shipped (Keras 3.15, TensorFlow backend), fit fails in two places under that strategy:

1. `TensorFlowTrainer._maybe_symbolic_build` peeks the first batch of the distributed
   dataset to build the model's state and averages it across workers with
   `strategy.reduce("MEAN", ...)`, which fails ("Attempt to convert a value (PerReplica...)")
   and, when it does not, costs a pass over the stream's first batch. `build_from_spec`
   replaces it on the model: the state is built from the dataset's `element_spec` (shapes
   and dtypes only), reading no data.
2. `reduce_per_replica` reduces every fit output under a multi-worker strategy with
   `strategy.reduce("MEAN", v, axis=0)`, which fails on scalars (every metric is one).
   `apply()` wraps it: scalars are averaged across replicas with axis=None; the rest go
   to the original.

Both touch private Keras code, so they are pinned: `apply()` refuses another Keras minor
version, and tests/unit/test_keras_fix.py fails when the source of the two patched
functions changes (then re-check keras#20585 and drop or adapt these fixes).
"""

from __future__ import annotations

import hashlib
import inspect

import keras
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as tf_trainer

PINNED_KERAS = "3.15."
# sha256 of the source of the Keras functions these fixes stand in for, as shipped in PINNED_KERAS.
PATCHED_SOURCES = {
    "TensorFlowTrainer._maybe_symbolic_build": "92a504f5eba9b29f81f1bf26180bdd5bf5186b06b7bda426534b90d2d02bc1c2",
    "reduce_per_replica": "2e7d54b1e6edc29a8c6a7e6b66cd4c8be3ba7842412c93753ac3afe169fa7fb8",
}
_original_reduce = tf_trainer.reduce_per_replica


def source_digests() -> dict[str, str]:
    """sha256 of the installed Keras' source of the patched functions."""
    functions = {
        "TensorFlowTrainer._maybe_symbolic_build": tf_trainer.TensorFlowTrainer._maybe_symbolic_build,
        "reduce_per_replica": _original_reduce,
    }
    return {name: hashlib.sha256(inspect.getsource(f).encode()).hexdigest() for name, f in functions.items()}


def _reduce_per_replica(values, strategy, reduction):
    if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):

        def one(value):
            if strategy.experimental_local_results(value)[0].shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return _original_reduce(value, strategy, reduction)

        return tf.nest.map_structure(one, values)
    return _original_reduce(values, strategy, reduction)


def apply() -> None:
    """Installs fix 2 process-wide (call in a worker process, before fit)."""
    if not keras.__version__.startswith(PINNED_KERAS):
        raise RuntimeError(
            f"train.workers > 1 is pinned to Keras {PINNED_KERAS}x (keras-team/keras#20585 fixes); "
            f"this is Keras {keras.__version__}"
        )
    tf_trainer.reduce_per_replica = _reduce_per_replica


def build_from_spec(model: keras.Model, element_spec) -> None:
    """Fix 1 on one model: its state is built from `element_spec` ((x, y) TensorSpecs), never from data."""

    def maybe_symbolic_build(iterator=None, data_batch=None):
        with model.distribute_strategy.scope():
            model._symbolic_build(data_batch=element_spec)

    model._maybe_symbolic_build = maybe_symbolic_build
