"""The equivalence check of distributed training (train.workers: N): the weights N workers
trained must be those of ONE process fed the same global batches (the N parts' batches, step
by step, concatenated) from the same initial weights.

global_batches() pulls the parts from a process service exactly as the workers do; fit_one()
trains the single-process reference; max_difference() compares weight lists.

This file also runs as a script where only a process service is reachable (inside a container
on the compose stack's network, tests/e2e/test_compose_replicas.py):

    python -c "$(cat reference_fit.py)" REQUEST_JSON     # writes the global batches as .npz to stdout

REQUEST_JSON: {"dataset": {"name", "version"}, "split": {...}, "ops": [...], "batch_size": B,
"workers": N, "epochs": E} (split and ops as protobuf JSON). It needs the cookline package only.
"""

from __future__ import annotations

import io
import json
import sys

import numpy as np

Batch = tuple[np.ndarray, np.ndarray]  # (features, label)


def global_batches(stub, dataset, split, ops, batch_size: int, workers: int, epoch: int = 0) -> list[Batch]:
    """One epoch of what `workers` workers with a global `batch_size` are fed, step by step:
    part k's batch (batch_size / workers rows) from process, concatenated over k.

    `stub` is a ProcessServiceStub; `epoch` seeds the random ops (shuffle) as the workers' feeds do."""
    from cookline import tensors
    from cookline.v1 import data_pb2, process_pb2

    parts = []
    for k in range(workers):
        request = process_pb2.ProcessRequest(
            dataset=dataset,
            split=split,
            subset=data_pb2.SUBSET_TRAIN,
            ops=ops,
            batch_size=batch_size // workers,
            partition=data_pb2.Partition(index=k, count=workers),
            epoch=epoch,
        )
        parts.append([tensors.batch_to_numpy(r.batch) for r in stub.Process(request, timeout=120)])
    assert len({len(p) for p in parts}) == 1, [len(p) for p in parts]  # lock-step: equal step counts
    return [
        (np.concatenate([p[step]["features"] for p in parts]), np.concatenate([p[step]["label"] for p in parts]))
        for step in range(len(parts[0]))
    ]


def fit_one(spec, input_shape: list[int], num_classes: int, seed: int, epochs: list[list[Batch]]):
    """(initial weights, trained weights) of one process, no strategy, seeded like the workers,
    trained on `epochs` (each a list of global batches) in order."""
    import keras
    import tensorflow as tf

    from services.train import models

    keras.utils.set_random_seed(seed)
    model = models.build(spec, input_shape, num_classes)
    initial = model.get_weights()
    steps = [batch for epoch in epochs for batch in epoch]
    data = tf.data.Dataset.from_generator(
        lambda: iter(steps),
        output_signature=(
            tf.TensorSpec([None, *input_shape], tf.float32),
            tf.TensorSpec([None], tf.int32),
        ),
    )
    # one pass over every epoch's batches: the same optimizer steps as `len(epochs)` epochs
    model.fit(data, epochs=1, shuffle=False, verbose=0)
    return initial, model.get_weights()


def max_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """The largest absolute difference between two lists of weights of the same shapes."""
    assert [x.shape for x in a] == [y.shape for y in b], ([x.shape for x in a], [y.shape for y in b])
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def save_batches(epochs: list[list[Batch]]) -> bytes:
    """Epochs of global batches as .npz bytes (keys e<epoch>s<step>x / ...y)."""
    arrays = {}
    for e, batches in enumerate(epochs):
        for s, (x, y) in enumerate(batches):
            arrays[f"e{e}s{s}x"], arrays[f"e{e}s{s}y"] = x, y
    out = io.BytesIO()
    np.savez(out, epochs=len(epochs), **arrays)
    return out.getvalue()


def load_batches(data: bytes) -> list[list[Batch]]:
    """save_batches' bytes back as epochs of global batches."""
    with np.load(io.BytesIO(data)) as saved:
        epochs = []
        for e in range(int(saved["epochs"])):
            steps = sorted(
                int(k[len(f"e{e}s") : -1]) for k in saved.files if k.startswith(f"e{e}s") and k.endswith("x")
            )
            epochs.append([(saved[f"e{e}s{s}x"], saved[f"e{e}s{s}y"]) for s in steps])
        return epochs


def _main(argv: list[str]) -> None:
    from google.protobuf import json_format

    from cookline import channels
    from cookline.v1 import data_pb2, process_pb2_grpc
    from cookline.v1 import pipeline_pb2 as pb

    asked = json.loads(argv[0])
    stub = process_pb2_grpc.ProcessServiceStub(channels.channel("process"))
    dataset = data_pb2.DatasetRef(**asked["dataset"])
    split = json_format.ParseDict(asked.get("split") or {}, data_pb2.SplitSpec())
    ops = [json_format.ParseDict(op, pb.Op()) for op in asked["ops"]]
    epochs = [
        global_batches(stub, dataset, split, ops, asked["batch_size"], asked["workers"], epoch)
        for epoch in range(asked["epochs"])
    ]
    sys.stdout.buffer.write(save_batches(epochs))


if __name__ == "__main__":
    _main(sys.argv[1:])
