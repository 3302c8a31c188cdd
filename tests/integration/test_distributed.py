"""Distributed training (services/train/distributed.py): two worker processes with TF_CONFIG, each
on its partition from the real process service, train in lock-step (MultiWorkerMirroredStrategy)
and end with the weights of one worker fed the same global batches; two workers resumed from the
chief's checkpoint end where an uninterrupted fit would."""

import threading

import numpy as np

from cookline import channels
from cookline.spec import train as train_spec
from cookline.v1 import data_pb2, process_pb2, process_pb2_grpc, train_pb2
from cookline.v1 import pipeline_pb2 as pb
from dataplane import ingest
from helpers import IRIS_CSV, free_ports
from reference_fit import fit_one, global_batches, max_difference
from services.common.store import store_from_env
from services.train import distributed
from services.train.checkpoints import Checkpoints

SPLIT = data_pb2.SplitSpec(validation=0.0, seed=1)
WORKERS, BATCH, EPOCHS, SEED = 2, 10, 3, 7  # 150 rows: 2 parts of 75, 15 steps of 2 x 5 rows


def _job(ref, fitted, spec, workers, run_id=""):
    pipeline = pb.PipelineSpec(name="dist", split=SPLIT, train=spec)
    return train_pb2.TrainWorkerRequest(
        train=train_pb2.TrainRequest(run_id=run_id, dataset=ref, pipeline=pipeline),
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


def test_two_workers_resumed_from_a_checkpoint_end_where_an_uninterrupted_fit_does(data_plane, tmp_path):
    """Epoch 1 on two workers (worker 0 checkpoints it), then a second pair of fresh worker processes
    resumed from that checkpoint for epoch 2: the weights are those of one process fed both epochs'
    global batches without a break. Adam (its moments are in the checkpoint) and a shuffle (seeded
    by epoch: epoch 2's order, not epoch 1's again) make a lost optimizer state, a worker that did not
    load the checkpoint (all-reduced gradients would differ) or a restarted epoch count show."""
    env = data_plane[1]
    ref = ingest(env, "iris-dist", IRIS_CSV, label="species").dataset.ref
    process = process_pb2_grpc.ProcessServiceStub(channels.channel("process", env))
    fitted = list(
        process.Fit(
            process_pb2.FitRequest(dataset=ref, split=SPLIT, ops=[pb.Op(standardize=pb.StandardizeOp())]), timeout=60
        ).ops
    ) + [pb.Op(shuffle=pb.ShuffleOp(buffer=150, seed=3))]

    def spec(epochs):
        train = pb.TrainSpec(
            model="mlp", epochs=epochs, batch_size=BATCH, workers=WORKERS, optimizer="adam", learning_rate=0.01
        )
        return train_spec.resolve(train)

    run_id = "dist-resume"
    first = _job(ref, fitted, spec(1), [f"127.0.0.1:{p}" for p in free_ports(WORKERS)], run_id)
    _run_workers(first, env, str(tmp_path / "first.npz"))
    checkpoints = Checkpoints(store_from_env(env), run_id)
    record = checkpoints.record()
    checkpoints.close()
    assert record["epoch"] == 1 and record["sha256"]

    second = _job(ref, fitted, spec(2), [f"127.0.0.1:{p}" for p in free_ports(WORKERS)], run_id)
    second.resume.CopyFrom(train_pb2.TrainCheckpoint(epoch=1, key=record["key"], sha256=record["sha256"]))
    weights_path = str(tmp_path / "second.npz")
    progress = _run_workers(second, env, weights_path)
    assert progress[0].resumed_from_epoch == 1
    assert [p.epoch for p in progress if p.epoch_finished] == [2]
    with np.load(weights_path) as saved:
        resumed = [saved[f"arr_{i}"] for i in range(len(saved.files))]

    epochs = [global_batches(process, ref, SPLIT, fitted, BATCH, WORKERS, epoch) for epoch in (0, 1)]
    assert not np.array_equal(epochs[0][0][1], epochs[1][0][1])  # each epoch its own order
    _initial, trained = fit_one(spec(2), [4], 3, SEED, epochs)
    difference = max_difference(resumed, trained)
    assert difference < 1e-5, difference


def test_a_worker_process_ends_with_the_train_service_that_started_it(data_plane):
    """Worker 1 of 2 alone waits for its peer in its collectives; when the train service that started
    it dies (the kernel closes its end of the worker's stdin, however it dies), the worker exits."""
    env = data_plane[1]
    ref = ingest(env, "iris-dist", IRIS_CSV, label="species").dataset.ref
    spec = train_spec.resolve(pb.TrainSpec(model="mlp", epochs=EPOCHS, batch_size=BATCH, workers=WORKERS))
    job = _job(ref, [], spec, [f"127.0.0.1:{p}" for p in free_ports(WORKERS)])
    job.index = 1
    worker = distributed.WorkerProcess(job, None, env)
    assert worker.process.poll() is None
    worker.lifeline.close()
    assert worker.process.wait(timeout=120) == 1
