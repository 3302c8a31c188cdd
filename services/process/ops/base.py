"""What every op shares: the batch type, error helpers, and the Op base class.

An op's name, parameters, defaults and ranges are declared in cookline.spec.ops; the classes
here implement them on streams."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np

from cookline.spec import ops as spec_ops
from cookline.v1 import pipeline_pb2
from services.common.errors import Fail, invalid

Batch = dict[str, np.ndarray]


class OpKind:
    """One kind of op. Subclasses set `name` and override what they need.

    - `settings(op, where)`: the op's parameters with their defaults (checked by cookline.spec.ops).
    - `fitter(op, where)`: an object with `add(batch)` and `done() -> dict[str, np.ndarray]`, or None when
      the op needs no fitting. Fitting sees the TRAIN rows after the ops before it.
    - `apply(op, where, batches, epoch, training)`: the transformed stream. `training` is True only for the
      TRAIN subset: random augmentation runs there alone.
    - `deterministic` (declared in cookline.spec.ops): False for ops whose output depends on the epoch
      (shuffle, augmentation); they are skipped while later ops are fitted.
    - `reorders_only`: True for ops that only change the order of rows (shuffle): their effect can be
      computed on row indices alone, whatever the tensors hold.
    - `graph(op, where)`: the op's in-graph (serving) form, built from its fitted parameters: a function
      from a dict of TensorFlow tensors (one batch, named as in `apply`) to the transformed dict, doing
      what `apply` does to the same rows (tests hold the two equal). The exported model runs it, so
      serving takes the raw collected tensors. Lookup tables and other TF resources it uses are listed
      in the function's `resources` attribute (see `graph_fn`), for the exporter to save with the model.
      Training-only ops (not `deterministic`: shuffle, augmentation) leave the tensors as they are.
      A plugin op supplies `graph` beside `apply`.
    """

    name = ""
    reorders_only = False

    @property
    def deterministic(self) -> bool:
        return spec_ops.deterministic(self.name)

    def settings(self, op: pipeline_pb2.Op, where: str) -> dict:
        return spec_ops.OPS.get(self.name).resolve(spec_ops.values(op), where)

    def fitter(self, op: pipeline_pb2.Op, where: str):
        return None

    def apply(
        self, op: pipeline_pb2.Op, where: str, batches: Iterator[Batch], epoch: int, training: bool
    ) -> Iterator[Batch]:
        raise NotImplementedError

    def graph(self, op: pipeline_pb2.Op, where: str):
        if not self.deterministic:
            return graph_fn(lambda tensors: tensors)
        raise NotImplementedError(f"{where}: the op {self.name!r} has no in-graph form (OpKind.graph)")

    @staticmethod
    def params(op: pipeline_pb2.Op):
        return getattr(op, op.WhichOneof("kind"))


def graph_fn(fn: Any, *resources: Any) -> Any:
    """An op's in-graph form: `fn` (dict of tensors -> dict of tensors) with the TF resources it
    uses (lookup tables), which the exporter tracks so the SavedModel holds them."""
    fn.resources = list(resources)
    return fn


def need(batch: Batch, tensor: str, where: str) -> np.ndarray:
    """The tensor an op works on, or INVALID_ARGUMENT naming the op and what the data has."""
    if tensor not in batch:
        raise invalid(f"{where}: the data has no {tensor!r} tensor (it has {', '.join(sorted(batch))})")
    return batch[tensor]


def fitted(op: pipeline_pb2.Op, where: str, *names: str) -> list[np.ndarray]:
    """The op's fitted parameters, or FAILED_PRECONDITION when Fit has not run."""
    from cookline import tensors

    missing = [n for n in names if n not in op.fitted]
    if missing:
        raise Fail(grpc.StatusCode.FAILED_PRECONDITION, f"{where} is not fitted (call Fit first)")
    return [tensors.to_numpy(op.fitted[n]) for n in names]


def rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of one op in one epoch: the same for the same (seed, epoch, op position)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, index])
