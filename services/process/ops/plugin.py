"""An op added by a plugin, behind the OpKind interface process uses for the built-ins.

The plugin's implementation is a class taking its checked parameters (a dict), with:
- `apply(batch, fitted) -> batch`: the streaming form, one batch (dict of numpy arrays) at a time;
- `fitter()`: None, or an object with `add(batch)` and `done() -> dict[str, np.ndarray]` (fitted
  on the TRAIN rows; what `done` returns is stored in Op.fitted and passed to apply / serving);
- `serving(inputs, fitted) -> outputs`: the same transformation on TensorFlow tensors (dicts of
  them), built into the exported model by train (not needed for a training-only op);
- optionally `output_fields(fields) -> fields`: tensor name -> (dtype, per-row shape) after the
  op, when it changes them (default: unchanged).
"""

from __future__ import annotations

import threading

from cookline import tensors
from cookline.spec import ops as spec_ops
from cookline.spec.params import Component
from services.common import plugins
from services.process.ops.base import OpKind, graph_fn

_lock = threading.Lock()
_kinds: dict[str, PluginOpKind] = {}


class PluginOpKind(OpKind):
    reorders_only = False

    def __init__(self, component: Component):
        self.name = component.name
        self.component = component

    @classmethod
    def of(cls, component: Component) -> PluginOpKind:
        with _lock:
            if component.name not in _kinds:
                _kinds[component.name] = cls(component)
            return _kinds[component.name]

    def impl(self, op, where: str):
        """The implementation, made with the op's checked parameters."""
        return plugins.implementation(self.component)(self.settings(op, where))

    def fitter(self, op, where):
        return self.impl(op, where).fitter()

    def apply(self, op, where, batches, epoch, training):
        if not training and not self.deterministic:
            yield from batches  # a training-only op
            return
        impl = self.impl(op, where)
        state = {name: tensors.to_numpy(t) for name, t in op.fitted.items()}
        for batch in batches:
            yield impl.apply(batch, state)

    def output_fields(self, op, fields):
        impl = self.impl(op, spec_ops.where(0, self.name))
        return impl.output_fields(fields) if hasattr(impl, "output_fields") else fields

    def graph(self, op, where):
        """The op's in-graph form: a function of a dict of TF tensors, built into the exported model
        (the implementation's `serving`); training-only ops leave the tensors as they are."""
        if not self.deterministic:
            return graph_fn(lambda inputs: inputs)
        impl = self.impl(op, where)
        state = {name: tensors.to_numpy(t) for name, t in op.fitted.items()}
        return graph_fn(
            lambda inputs: impl.serving(inputs, state)
        )  # no TF resources (lookup tables) the exporter must track
