"""Training through the services vs in-process `model.fit` on the same arrays.

    .venv/bin/python bench/training.py [--rows 60000] [--epochs 3] [--batch 256]

Both sides train the same MLP (784-128-10 by default) for the same epochs and
batch size on the same arrays, in the same run. The services side is timed from
the Train call to the end of its last epoch (evaluation and export excluded);
data streams collect -> process -> train. The in-process side is timed from
building the model to the end of model.fit's last epoch. The sides alternate,
--repeats times each. Prints the first run of each side (cold: its process has
traced nothing yet) and the best and median of the later ones (warm), with the
ratios services / in-process (target: <= 1.05x).

    .venv/bin/python bench/training.py --workers 2 [--rows ...]

Distributed training instead: a second train replica joins (COOKLINE_TRAIN_PEERS) and the
same Train call runs with train.workers 1 and N, interleaved, in the same run. Prints
samples/s of each from the Train call to the end of its last epoch (worker start-up
included) and over the epochs after the first (steady state), and the ratios N / 1. All
replicas share this machine's cores, so this measures the machinery, not a speed-up.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "support"))
from cookline import channels, config
from cookline.stack import Stack
from cookline.v1 import collect_pb2, collect_pb2_grpc, pipeline_pb2, train_pb2, train_pb2_grpc
from helpers import free_ports, train_peer_ports  # noqa: E402  (port helpers shared with the tests)


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
            block = np.column_stack([x[lo : lo + 2000].astype(np.float64), y[lo : lo + 2000]])
            np.savetxt(f, block, delimiter=",", fmt=["%.6g"] * x.shape[1] + ["c%d"])


def spec(args) -> pipeline_pb2.PipelineSpec:
    return pipeline_pb2.PipelineSpec(
        name="bench",
        collect=pipeline_pb2.CollectSpec(source="", label="label"),
        process=[pipeline_pb2.Op(shuffle=pipeline_pb2.ShuffleOp(buffer=10000, seed=1))],
        train=pipeline_pb2.TrainSpec(
            model="mlp", hidden_units=[args.hidden], epochs=args.epochs, batch_size=args.batch, learning_rate=0.001
        ),
    )


def stack_env(work: str) -> dict[str, str]:
    """The services' environment: the embedded store in `work`, free local ports."""
    env = dict(
        os.environ, COOKLINE_DATA_DIR=os.path.join(work, "store"), TF_CPP_MIN_LOG_LEVEL="2", COOKLINE_SOURCE_ROOTS=work
    )  # the generated CSV is a source
    env.pop("MINIO_ENDPOINT", None)
    ports = free_ports(6, set())
    for service, port in zip(config.SERVICES, ports[:5], strict=True):
        env[f"COOKLINE_{service.upper()}_ADDR"] = f"127.0.0.1:{port}"
    env["COOKLINE_GATEWAY_HTTP_ADDR"] = f"127.0.0.1:{ports[5]}"
    return env


def services_side(args, stack: Stack, env: dict[str, str], csv_path: str, peers: list[Stack] | None = None):
    """Starts collect, process and train (and, with `peers`, the other train replicas), ingests the CSV;
    returns a function that times one Train call (with train.workers as given)."""
    for service in ("collect", "process", "train"):
        stack.start(service)
    stack.wait_healthy(timeout=180)
    for peer in peers or []:
        peer.wait_healthy(timeout=180)
    collect = collect_pb2_grpc.CollectServiceStub(channels.channel("collect", env))
    pipeline = spec(args)
    pipeline.collect.source = csv_path
    t0 = time.perf_counter()
    *_, last = collect.Ingest(collect_pb2.IngestRequest(dataset="bench", source=pipeline.collect))
    print(f"  ingest: {time.perf_counter() - t0:.1f} s ({last.dataset.num_rows} rows)")
    train = train_pb2_grpc.TrainServiceStub(channels.channel("train", env))

    def train_once(workers: int = 1, marks_out: list | None = None) -> float:
        """Seconds from the Train call to the end of its last epoch (evaluation and export excluded)."""
        marks, loss = [], None
        pipeline.train.workers = workers
        start = time.perf_counter()
        for response in train.Train(train_pb2.TrainRequest(dataset=last.dataset.ref, pipeline=pipeline)):
            if response.HasField("progress") and response.progress.epoch_finished:
                marks.append(time.perf_counter() - start)
                loss = response.progress.metrics["loss"]
        report(f"{workers} worker" + "s" * (workers > 1) if peers is not None else "services", loss, marks)
        if marks_out is not None:
            marks_out.append(marks)
        return marks[-1]

    return train_once


def report(side: str, loss: float, marks: list[float]) -> None:
    print(f"  {side:>10}: final loss {loss:.4f}; epochs ended at {', '.join(f'{m:.2f}' for m in marks)} s")


def in_process(args, x, y) -> float:
    """Seconds from building the model to the end of model.fit's last epoch, as on the services side."""
    import keras

    from services.train import models

    marks = []
    start = time.perf_counter()  # building the model counts on both sides
    model = models.build(spec(args).train, x.shape[1], int(y.max()) + 1)
    epoch_marks = keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: marks.append(time.perf_counter() - start))
    history = model.fit(
        x, y, epochs=args.epochs, batch_size=args.batch, shuffle=True, verbose=0, callbacks=[epoch_marks]
    )
    report("in-process", history.history["loss"][-1], marks)
    return marks[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=60000)
    parser.add_argument("--features", type=int, default=784)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each side, interleaved (at least 2)")
    parser.add_argument(
        "--workers", type=int, default=1, help="N > 1: compare train.workers N with 1 (a second train replica) instead"
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    x, y = make_data(args.rows, args.features, args.classes)
    if args.workers > 1:
        distributed(args, x, y)
        return
    services, baseline = [], []
    with tempfile.TemporaryDirectory(prefix="cookline-bench-") as work:
        csv_path = os.path.join(work, "bench.csv")
        write_csv(csv_path, x, y)
        env = stack_env(work)
        with Stack(env, log_dir=os.environ.get("BENCH_LOGS") or os.path.join(work, "logs")) as stack:
            train_once = services_side(args, stack, env, csv_path)
            for _ in range(max(args.repeats, 2)):  # interleaved: drift in machine load hits both sides alike
                services.append(train_once())
                baseline.append(in_process(args, x, y))
    # The first run of each side is its process's first trace of the model: "cold". Later runs are
    # "warm": the train service reuses the traced step of the same architecture (services/train/warm.py),
    # and the in-process side has TensorFlow's own caches warm.
    rows = args.rows * args.epochs

    def median(times):
        return sorted(times)[len(times) // 2]

    print(f"\n{'seconds':24}{'first run':>10}{'later best':>12}{'median':>8}   samples/s (later best)")
    for side, times in (("in-process model.fit", baseline), ("through the services", services)):
        print(f"{side:24}{times[0]:10.2f}{min(times[1:]):12.2f}{median(times[1:]):8.2f}   {rows / min(times[1:]):.0f}")
    print(
        f"{'ratio services/in-proc':24}{services[0] / baseline[0]:10.3f}{min(services[1:]) / min(baseline[1:]):12.3f}"
        f"{median(services[1:]) / median(baseline[1:]):8.3f}   (target <= 1.05x)"
    )


def distributed(args, x, y) -> None:
    """train.workers 1 vs N through the services, interleaved, in the same run."""
    if args.batch % args.workers:
        raise SystemExit(f"--batch {args.batch} must be a multiple of --workers {args.workers}")
    times: dict[int, list[float]] = {1: [], args.workers: []}
    marks: dict[int, list[list[float]]] = {1: [], args.workers: []}
    with tempfile.TemporaryDirectory(prefix="cookline-bench-") as work:
        csv_path = os.path.join(work, "bench.csv")
        write_csv(csv_path, x, y)
        env = stack_env(work)
        taken = {int(a.rsplit(":", 1)[1]) for k, a in env.items() if k.endswith("_ADDR")}
        ports = train_peer_ports(args.workers, taken)
        env["COOKLINE_TRAIN_ADDR"] = f"127.0.0.1:{ports[0]}"
        env["COOKLINE_TRAIN_PEERS"] = ",".join(f"127.0.0.1:{p}" for p in ports)
        logs = os.environ.get("BENCH_LOGS") or os.path.join(work, "logs")
        with contextlib.ExitStack() as running:
            stack = running.enter_context(Stack(env, log_dir=logs))
            peers = []
            for port in ports[1:]:  # the other train replicas: the same service on their own ports
                peer = running.enter_context(
                    Stack(
                        dict(env, COOKLINE_TRAIN_ADDR=f"127.0.0.1:{port}"), log_dir=os.path.join(logs, f"train-{port}")
                    )
                )
                peer.start("train")
                peers.append(peer)
            train_once = services_side(args, stack, env, csv_path, peers=peers)
            for _ in range(max(args.repeats, 2)):  # interleaved: drift in machine load hits both alike
                for workers in (1, args.workers):
                    times[workers].append(train_once(workers, marks[workers]))
    rows = args.rows * args.epochs
    print(f"\n{'samples/s':24}{'first run':>10}{'later best':>12}{'steady (epochs 2+)':>20}")
    steady = {}
    for workers in (1, args.workers):
        later = [m for m in marks[workers][1:] if len(m) > 1]
        steady[workers] = max((args.rows * (len(m) - 1) / (m[-1] - m[0]) for m in later), default=float("nan"))
        print(
            f"{str(workers) + ' worker(s)':24}{rows / times[workers][0]:10.0f}{rows / min(times[workers][1:]):12.0f}"
            f"{steady[workers]:20.0f}"
        )
    print(
        f"{'ratio ' + str(args.workers) + ' / 1':24}{times[1][0] / times[args.workers][0]:10.3f}"
        f"{min(times[1][1:]) / min(times[args.workers][1:]):12.3f}{steady[args.workers] / steady[1]:20.3f}"
        f"   (all replicas share this machine's {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
