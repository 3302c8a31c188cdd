"""Training through the services vs in-process `model.fit` on the same arrays.

    .venv/bin/python bench/training.py [--rows 60000] [--epochs 3] [--batch 256]

Both sides train the same MLP (784-128-10 by default) for the same epochs and
batch size on the same arrays, in the same run. The services side is timed from
the Train call to its last epoch (export excluded); data streams collect ->
process -> train. Prints both times and the ratio (target: <= 1.05x).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from s3server import _free_ports  # noqa: E402  (free-port helper shared with the tests)

from cookline import channels, config  # noqa: E402
from cookline.stack import Stack  # noqa: E402
from cookline.v1 import (collect_pb2, collect_pb2_grpc, pipeline_pb2, train_pb2,  # noqa: E402
                         train_pb2_grpc)


def make_data(rows: int, features: int, classes: int, seed: int = 0):
    """Separable-ish synthetic classification data: class-dependent means plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows).astype(np.int32)
    centres = rng.normal(0, 1, (classes, features)).astype(np.float32)
    x = centres[labels] + rng.normal(0, 2, (rows, features)).astype(np.float32)
    return x.astype(np.float32), labels


def write_csv(path: str, x: np.ndarray, y: np.ndarray) -> None:
    header = ",".join([f"f{i}" for i in range(x.shape[1])] + ["label"])
    with open(path, "w") as f:
        f.write(header + "\n")
        for lo in range(0, len(y), 2000):
            block = np.column_stack([x[lo:lo + 2000].astype(np.float64), y[lo:lo + 2000]])
            np.savetxt(f, block, delimiter=",", fmt=["%.6g"] * x.shape[1] + ["c%d"])


def spec(args) -> pipeline_pb2.PipelineSpec:
    return pipeline_pb2.PipelineSpec(
        name="bench",
        collect=pipeline_pb2.CollectSpec(source="", label="label"),
        process=[pipeline_pb2.Op(shuffle=pipeline_pb2.ShuffleOp(buffer=10000, seed=1))],
        train=pipeline_pb2.TrainSpec(model="mlp", hidden_units=[args.hidden], epochs=args.epochs,
                                     batch_size=args.batch, learning_rate=0.001),
    )


def through_services(args, csv_path: str, work: str) -> float:
    ports = _free_ports(5, set())
    env = dict(os.environ, COOKLINE_DATA_DIR=os.path.join(work, "store"), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("MINIO_ENDPOINT", None)
    for service, port in zip(config.SERVICES, ports):
        env[f"COOKLINE_{service.upper()}_ADDR"] = f"127.0.0.1:{port}"
    with Stack(env, log_dir=os.environ.get("BENCH_LOGS") or os.path.join(work, "logs")) as stack:
        for service in ("collect", "process", "train"):
            stack.start(service)
        stack.wait_healthy(timeout=180)
        collect = collect_pb2_grpc.CollectServiceStub(channels.channel("collect", env))
        pipeline = spec(args)
        pipeline.collect.source = csv_path
        t0 = time.perf_counter()
        *_, last = collect.Ingest(collect_pb2.IngestRequest(dataset="bench", source=pipeline.collect))
        print(f"  ingest: {time.perf_counter() - t0:.1f} s ({last.dataset.num_rows} rows)")
        train = train_pb2_grpc.TrainServiceStub(channels.channel("train", env))
        start = time.perf_counter()
        finished = None
        marks = []
        for response in train.Train(train_pb2.TrainRequest(dataset=last.dataset.ref, pipeline=pipeline)):
            if response.HasField("progress") and response.progress.epoch_finished:
                marks.append(time.perf_counter() - start)
            if response.HasField("progress") and response.progress.epoch_finished \
                    and response.progress.epoch == args.epochs:
                finished = time.perf_counter()
                print(f"  services: final loss {response.progress.metrics['loss']:.4f}; "
                      f"epochs ended at {', '.join(f'{m:.2f}' for m in marks)} s")
        return finished - start


def in_process(args, x, y) -> float:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from services.train import models
    start = time.perf_counter()  # building the model counts on both sides
    model = models.build(spec(args).train, x.shape[1], int(y.max()) + 1)
    history = model.fit(x, y, epochs=args.epochs, batch_size=args.batch, shuffle=True, verbose=0)
    elapsed = time.perf_counter() - start
    print(f"  in-process: final loss {history.history['loss'][-1]:.4f}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=60000)
    parser.add_argument("--features", type=int, default=784)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    x, y = make_data(args.rows, args.features, args.classes)
    with tempfile.TemporaryDirectory(prefix="cookline-bench-") as work:
        csv_path = os.path.join(work, "bench.csv")
        write_csv(csv_path, x, y)
        services = through_services(args, csv_path, work)
    baseline = in_process(args, x, y)
    rows = args.rows * args.epochs
    print(f"\n{'':24}{'seconds':>10}{'samples/s':>12}")
    print(f"{'in-process model.fit':24}{baseline:10.2f}{rows / baseline:12.0f}")
    print(f"{'through the services':24}{services:10.2f}{rows / services:12.0f}")
    print(f"ratio services / in-process: {services / baseline:.3f}x (target <= 1.05x)")


if __name__ == "__main__":
    main()
