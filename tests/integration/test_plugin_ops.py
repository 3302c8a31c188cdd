"""Plugin ops inside process's op machinery (no server process): fitting, streaming, the in-graph
serving form equal to the streaming form, and a training-only plugin op. Run in a fresh
interpreter, since plugins join process-wide registries; it imports TensorFlow (tens of seconds
of CPU), which keeps it out of the unit tier."""

import os
import subprocess
import sys

from helpers import ROOT

CENTER = '''
import numpy as np
from cookline.spec import Component, Param

class Center:
    """Subtracts the training mean of "features" (fitted), then scales by `factor`."""
    def __init__(self, params):
        self.factor = params["factor"]
    def fitter(self):
        return _MeanFitter()
    def apply(self, batch, fitted):
        return {**batch, "features": ((batch["features"] - fitted["mean"]) * self.factor).astype(np.float32)}
    def serving(self, inputs, fitted):
        return {**inputs, "features": (inputs["features"] - fitted["mean"].astype(np.float32)) * self.factor}

class _MeanFitter:
    def __init__(self):
        self.total, self.rows = 0.0, 0
    def add(self, batch):
        self.total = self.total + batch["features"].astype(np.float64).sum(axis=0)
        self.rows += len(batch["features"])
    def done(self):
        return {"mean": self.total / self.rows}

class Jitter:
    def __init__(self, params):
        pass
    def fitter(self):
        return None
    def apply(self, batch, fitted):
        return {**batch, "features": batch["features"] + 100}

CENTER = Component("center", "op", (Param("factor", "float", default=1.0, lo=0, lo_open=True),),
                   implementation="my_ops:Center")
JITTER = Component("jitter", "op", (), deterministic=False, implementation="my_ops:Jitter")
'''

SCRIPT = r"""
import sys
from importlib import metadata
sys.path[:0] = sys.argv[1:3]
import numpy as np
import tensorflow as tf
from cookline import tensors
from cookline.spec import plugins
from cookline.v1 import pipeline_pb2 as pb
from services.process import ops

GROUP = "cookline.ops"
for name, value in (("clip", "cookline_example_plugins:CLIP"), ("center", "my_ops:CENTER"),
                    ("jitter", "my_ops:JITTER")):
    loaded = plugins._register(GROUP, plugins.GROUPS[GROUP], metadata.EntryPoint(name, value, GROUP))
    assert not loaded.error, loaded

def plugin(name, **params):
    op = pb.Op(plugin=pb.PluginOp(name=name))
    op.plugin.params.update(params)
    return op

rng = np.random.default_rng(0)
x = rng.normal(size=(50, 3)).astype(np.float32) * 4
batches = [{"features": x[i:i + 16], "label": np.zeros(len(x[i:i + 16]), np.int32)} for i in range(0, 50, 16)]
chain = [pb.Op(standardize=pb.StandardizeOp()), plugin("center", factor=2), plugin("clip", lo=-1, hi=1),
         plugin("jitter")]
fitted, rows = ops.fit(chain, lambda: iter(batches))
assert rows == 50 and "mean" in fitted[1].fitted
out = np.concatenate([b["features"] for b in ops.chain(fitted, iter(batches), 0, training=False)])
z = (x - x.mean(axis=0)) / x.std(axis=0)
expected = np.clip((z - z.mean(axis=0)) * 2, -1, 1)
np.testing.assert_allclose(out, expected, atol=1e-5)
trained = np.concatenate([b["features"] for b in ops.chain(fitted, iter(batches), 0, training=True)])
np.testing.assert_allclose(trained, expected + 100, atol=1e-4)  # the training-only op runs on TRAIN only
assert ops.output_fields({"features": ("float32", [3]), "label": ("int32", [])}, fitted)["features"] == \
    ("float32", [3])
assert not ops.kind_for(plugin("jitter")).deterministic and ops.kind_for(plugin("clip")).deterministic
# the in-graph serving form does what the streaming form does
inputs = {"features": tf.constant(z)}
for op in fitted[1:]:
    inputs = ops.kind_for(op).graph(op, "process[1]")(inputs)
np.testing.assert_allclose(inputs["features"].numpy(), expected, atol=1e-5)
print("ok")
"""


def test_plugin_ops_fit_stream_and_serve_alike(tmp_path):
    (tmp_path / "my_ops.py").write_text(CENTER)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), os.path.join(ROOT, "examples", "plugins")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
