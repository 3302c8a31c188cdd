"""Distributed training (services/train/distributed.py): two worker processes with TF_CONFIG, each
on its partition from the real process service, train in lock-step (MultiWorkerMirroredStrategy)
and end with the weights of one worker fed the same global batches."""

import threading

import numpy as np

from cookline import channels
from cookline.spec import train as train_spec
from cookline.v1 import data_pb2, process_pb2, process_pb2_grpc, train_pb2
from cookline.v1 import pipeline_pb2 as pb
from dataplane import ingest
from helpers import IRIS_CSV, free_ports
from reference_fit import fit_one, global_batches, max_difference
from services.train import distributed

SPLIT = data_pb2.SplitSpec(validation=0.0, seed=1)
WORKERS, BATCH, EPOCHS, SEED = 2, 10, 3, 7  # 150 rows: 2 parts of 75, 15 steps of 2 x 5 rows


def _job(ref, fitted, spec, workers):
    pipeline = pb.PipelineSpec(name="dist", split=SPLIT, train=spec)
    return train_pb2.TrainWorkerRequest(
        train=train_pb2.TrainRequest(dataset=ref, pipeline=pipeline),
        fitted_ops=fitted,
        workers=workers,
        input_name="features",
        input_dtype="float32",
        input_shape=[4],
        num_classes=3,
        train_rows=150,
        seed=SEED,
    )


def _run_workers(job, env, weights_path):
    """Both workers as fresh processes; the progress worker 0 streamed."""
    results, progress = {}, []

    def run(k):
        mine = train_pb2.TrainWorkerRequest()
        mine.CopyFrom(job)
        mine.index = k
        try:
            for event in distributed.WorkerProcess(mine, weights_path if k == 0 else None, env).events():
                if k == 0:
                    progress.append(event.progress)
            results[k] = "ok"
        except Exception as exc:  # reported below
            results[k] = repr(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert results == {0: "ok", 1: "ok"}, results
    return progress


def test_two_workers_match_one_worker_fed_the_same_global_batches(data_plane, tmp_path):
    env = data_plane[1]
    ref = ingest(env, "iris-dist", IRIS_CSV, label="species").dataset.ref
    process = process_pb2_grpc.ProcessServiceStub(channels.channel("process", env))
    fitted = list(
        process.Fit(
            process_pb2.FitRequest(dataset=ref, split=SPLIT, ops=[pb.Op(standardize=pb.StandardizeOp())]), timeout=60
        ).ops
    )
    spec = train_spec.resolve(
        pb.TrainSpec(
            model="mlp",
            epochs=EPOCHS,
            batch_size=BATCH,
            workers=WORKERS,
            optimizer="sgd",
            learning_rate=0.1,
            progress_every_batches=5,
        )
    )
    ports = free_ports(WORKERS)
    job = _job(ref, fitted, spec, [f"127.0.0.1:{p}" for p in ports])
    weights_path = str(tmp_path / "weights.npz")
    progress = _run_workers(job, env, weights_path)
    ended = [p for p in progress if p.epoch_finished]
    assert [p.epoch for p in ended] == [1, 2, 3] and all(np.isfinite(p.metrics["loss"]) for p in ended)
    with np.load(weights_path) as saved:
        distributed_weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]

    # One process, no strategy, the same initial weights, fed the same global batches in the same order.
    process = process_pb2_grpc.ProcessServiceStub(channels.channel("process", env))
    batches = global_batches(process, ref, SPLIT, fitted, BATCH, WORKERS)
    assert len(batches) == 15
    initial, trained = fit_one(spec, [4], 3, SEED, [batches] * EPOCHS)
    difference = max_difference(distributed_weights, trained)
    assert difference < 1e-5, difference
    moved = max_difference(initial, trained)
    assert moved > 1e-2, moved  # the comparison is between trained weights
