"""The clip op: streaming form (numpy, in process) and serving form (TensorFlow, in the exported model)."""

from __future__ import annotations

import numpy as np


class Clip:
    """Clips "features" to [lo, hi]. Needs no fitting, so `fitter` returns None."""

    def __init__(self, params: dict):
        self.lo, self.hi = float(params["lo"]), float(params["hi"])

    def fitter(self):
        return None

    def apply(self, batch: dict[str, np.ndarray], fitted: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**batch, "features": np.clip(batch["features"], self.lo, self.hi).astype(np.float32)}

    def serving(self, inputs: dict, fitted: dict[str, np.ndarray]) -> dict:
        import tensorflow as tf  # only train imports the serving form

        return {**inputs, "features": tf.clip_by_value(inputs["features"], self.lo, self.hi)}
