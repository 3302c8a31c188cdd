"""Distributed training (train.workers: N > 1) on TensorFlow's MultiWorkerMirroredStrategy.

The train service that gets the Train call is the chief. It fits the ops once (through
process), then starts worker 0 in a fresh process of its own and calls TrainWorker on the
next N - 1 replicas of COOKLINE_TRAIN_PEERS, each of which starts one fresh worker process
(a second strategy in one process hangs, so a process never trains twice). Every worker gets
TF_CONFIG naming all N collective endpoints, reads its own partition of the training (and
validation) rows through process, and runs `model.fit` with batch_size / N rows per step;
the gradients are all-reduced, so the replicas stay identical. Worker 0 streams progress,
writes the per-epoch checkpoints and, at the end, its weights, from which the chief builds
the model and publishes it exactly as a single-worker run does.

A worker's collective endpoint is its train service's host with port + COLLECTIVE_OFFSET
(50053 -> 51053). Worker processes talk to their train service through a pipe of frames:
b"P" + a TrainResponse (progress), b"E" + "CODE message" (an error), b"W" (weights written).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import cast

import grpc

from cookline import channels
from cookline.v1 import data_pb2, train_pb2, train_pb2_grpc
from services.common.errors import Fail
from services.train.plan import Fitted, Plan

log = logging.getLogger("cookline.train")

PEERS_ENV = "COOKLINE_TRAIN_PEERS"
COLLECTIVE_OFFSET = 1000
_HEADER = struct.Struct(">cI")


def peers(env=None) -> list[str]:
    """COOKLINE_TRAIN_PEERS: host:port of every train replica, the chief first (empty: none)."""
    text = (os.environ if env is None else env).get(PEERS_ENV, "")
    return [p.strip() for p in text.split(",") if p.strip()]


def collective_address(peer: str) -> str:
    """The collective endpoint of the worker process a train replica at `peer` starts."""
    host, _, port = peer.rpartition(":")
    return f"{host}:{int(port) + COLLECTIVE_OFFSET}"


# --- the chief --------------------------------------------------------------------------------


def fit(plan: Plan, fitted_ops):
    """Runs the distributed fit; yields worker 0's progress, returns a Fitted (the model, the last
    epoch's metrics).

    `fitted_ops` are the ops the training rows go through (with the default shuffle, if any)."""
    from services.train import models

    request, spec, source, rows, cancelled = plan.request, plan.spec, plan.source, plan.rows, plan.cancelled
    num_classes, vocabulary_size, class_weight = len(plan.class_names), plan.vocabulary_size, plan.class_weight

    addresses = peers()
    workers = int(spec.workers)
    if len(addresses) < workers:
        raise Fail(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"train.workers: {workers} needs {workers} train replicas in {PEERS_ENV}, which lists {len(addresses)}",
        )
    input_name, input_dtype, input_shape, _ = source
    job = train_pb2.TrainWorkerRequest(
        train=request,
        fitted_ops=fitted_ops,
        workers=[collective_address(a) for a in addresses[:workers]],
        input_name=input_name,
        input_dtype=input_dtype,
        input_shape=list(input_shape),
        num_classes=num_classes,
        vocabulary_size=vocabulary_size,
        train_rows=rows[data_pb2.SUBSET_TRAIN],
        validation_rows=rows[data_pb2.SUBSET_VALIDATION],
        class_weight=class_weight or {},
        seed=int(spec.seed) & 0xFFFFFFFF,
    )
    events: queue.Queue = queue.Queue()
    scratch = tempfile.mkdtemp(prefix="cookline-workers-")
    weights = os.path.join(scratch, "weights.npz")
    chief = WorkerProcess(_for_worker(job, 0), weights)
    calls = []
    try:
        threading.Thread(target=_drain, args=(0, addresses[0], chief.events(), events), daemon=True).start()
        for k in range(1, workers):
            stub = train_pb2_grpc.TrainServiceStub(channels.channel("train", target=addresses[k]))
            call = stub.TrainWorker(_for_worker(job, k))
            calls.append(call)
            threading.Thread(target=_drain, args=(k, addresses[k], call, events), daemon=True).start()
        log.info("run %s: distributed fit on %d workers (%s)", request.run_id, workers, ", ".join(job.workers))
        last_metrics: dict = {}
        running = workers
        while running:
            if cancelled.is_set():
                raise Fail(grpc.StatusCode.CANCELLED, "training cancelled")
            try:
                k, event = events.get(timeout=0.5)
            except queue.Empty:
                continue
            if event is None:
                running -= 1
            elif isinstance(event, Fail):
                raise event
            elif k == 0:  # the replicas are identical: worker 0 speaks for all
                if event.progress.epoch_finished:
                    last_metrics = dict(event.progress.metrics)
                yield event
        model = models.build(spec, input_shape, num_classes, input_dtype, vocabulary_size)
        with _np_load(weights) as saved:
            model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
        return Fitted(model, last_metrics)
    finally:
        chief.kill()
        for call in calls:
            call.cancel()
        if os.path.exists(weights):
            os.remove(weights)
        os.rmdir(scratch)


def _np_load(path):
    import numpy as np

    return np.load(path)


def _for_worker(job: train_pb2.TrainWorkerRequest, index: int) -> train_pb2.TrainWorkerRequest:
    mine = train_pb2.TrainWorkerRequest()
    mine.CopyFrom(job)
    mine.index = index
    return mine


def _drain(index: int, address: str, stream, events: queue.Queue) -> None:
    """Moves one worker's messages to the chief's queue; its end as None, its failure as a Fail."""
    try:
        for message in stream:
            events.put((index, message))
        events.put((index, None))
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            events.put((index, Fail(exc.code(), f"train worker {index} ({address}): {exc.details()}")))
    except Fail as exc:
        events.put((index, Fail(exc.code, f"train worker {index} ({address}): {exc}")))


# --- a replica's share ------------------------------------------------------------------------


def serve_worker(request: train_pb2.TrainWorkerRequest, context) -> Iterator[train_pb2.TrainWorkerResponse]:
    """TrainWorker: one fresh worker process, its progress streamed back; killed with the call."""
    if not 0 < request.index < len(request.workers):
        raise Fail(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"index: {request.index} is not in [1, {len(request.workers)}) (worker 0 is the chief's)",
        )
    worker = WorkerProcess(request, None)
    context.add_callback(worker.kill)
    try:
        for event in worker.events():
            yield train_pb2.TrainWorkerResponse(progress=event.progress)
    finally:
        worker.kill()


class WorkerProcess:
    """One worker of a distributed fit, in a fresh Python process with TF_CONFIG set."""

    def __init__(self, job: train_pb2.TrainWorkerRequest, weights_path: str | None, env=None):
        read, write = os.pipe()
        env = dict(os.environ if env is None else env)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": list(job.workers)}, "task": {"type": "worker", "index": int(job.index)}}
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.train.distributed", str(write), weights_path or ""],
            stdin=subprocess.PIPE,
            env=env,
            pass_fds=(write,),
        )
        os.close(write)
        self.pipe = os.fdopen(read, "rb")
        stdin = self.process.stdin
        assert stdin is not None  # stdin=PIPE
        stdin.write(job.SerializeToString())
        stdin.close()

    def events(self) -> Iterator[train_pb2.TrainResponse]:
        """The worker's progress until it ends; Fail when it reports an error or dies."""
        try:
            while header := self.pipe.read(_HEADER.size):
                kind, size = _HEADER.unpack(header)
                payload = self.pipe.read(size)
                if kind == b"P":
                    yield train_pb2.TrainResponse.FromString(payload)
                elif kind == b"E":
                    code, _, message = payload.decode().partition(" ")
                    raise Fail(getattr(grpc.StatusCode, code, grpc.StatusCode.INTERNAL), message)
                elif kind == b"W":
                    self.process.wait()
                    return
            status = self.process.wait()
            raise Fail(
                grpc.StatusCode.UNAVAILABLE, f"the worker process ended (exit status {status}) before its fit did"
            )
        finally:
            self.pipe.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# --- inside a worker process ------------------------------------------------------------------


class _Frames:
    """The pipe to the train service, with a queue's put() for progress messages."""

    def __init__(self, fd: int):
        self.out = os.fdopen(fd, "wb", buffering=0)
        self.lock = threading.Lock()

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        with self.lock:
            self.out.write(_HEADER.pack(kind, len(payload)) + payload)

    def put(self, message: train_pb2.TrainResponse) -> None:
        self.send(b"P", message.SerializeToString())


def _work(job: train_pb2.TrainWorkerRequest, frames: _Frames, weights_path: str) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    from cookline.spec import train as train_spec
    from cookline.v1 import process_pb2
    from services.common.store import store_from_env
    from services.train import keras_fix, models
    from services.train.checkpoints import Checkpoints
    from services.train.feed import EpochFeed, FeedSize
    from services.train.plan import Resume
    from services.train.service import EVAL_BATCH, _early_stopping, _Progress

    keras_fix.apply()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    request, index, count = job.train, int(job.index), len(job.workers)
    spec = train_spec.resolve(request.pipeline.train)
    per_worker = int(spec.batch_size) // count
    part = data_pb2.Partition(index=index, count=count)
    source = (job.input_name, job.input_dtype, list(job.input_shape), "int32" if job.num_classes else "float32")
    channel = channels.channel("process")
    process_raw = channel.unary_stream(
        "/cookline.v1.ProcessService/Process",
        request_serializer=process_pb2.ProcessRequest.SerializeToString,
        response_deserializer=None,
    )
    never = threading.Event()  # the worker is stopped by killing its process

    def feed(subset, batch_size, rows):
        asked = process_pb2.ProcessRequest(
            dataset=request.dataset, split=request.pipeline.split, subset=subset, ops=job.fitted_ops, partition=part
        )
        return EpochFeed(process_raw, asked, source, never, FeedSize(batch_size, rows=rows)).start()

    def distributed(data: EpochFeed):
        local = data.dataset()
        return strategy.distribute_datasets_from_function(lambda _context: local), local.element_spec

    train_data = feed(data_pb2.SUBSET_TRAIN, per_worker, job.train_rows)
    train_set, element_spec = distributed(train_data)
    val_data = val_set = None
    if job.validation_rows:
        val_data = feed(data_pb2.SUBSET_VALIDATION, max(EVAL_BATCH // count, 1), job.validation_rows)
        val_set, _ = distributed(val_data)
    with strategy.scope():
        keras.utils.set_random_seed(int(job.seed))  # every worker the same; the strategy syncs them anyway
        model = models.build(
            spec, list(job.input_shape), int(job.num_classes), job.input_dtype, int(job.vocabulary_size)
        )
    keras_fix.build_from_spec(model, element_spec)
    checkpoints = Checkpoints(store_from_env(), request.run_id) if request.run_id and index == 0 else None
    # _Progress puts its messages on a queue; here they go straight down the pipe to the train service
    progress = _Progress(cast(queue.Queue, frames), spec, int(job.train_rows), never, Resume(checkpoints))
    try:
        model.fit(
            train_set,
            steps_per_epoch=train_data.steps(),
            epochs=int(spec.epochs),
            validation_data=val_set,
            validation_steps=val_data.steps() if val_data else None,
            verbose=0,
            callbacks=[progress] + _early_stopping(spec),
            class_weight={int(k): v for k, v in job.class_weight.items()} or None,
        )
    finally:
        if checkpoints:
            checkpoints.close()
    if progress.diverged:
        raise Fail(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"train: training diverged: {progress.diverged}; lower train.learning_rate",
        )
    if weights_path:
        np.savez(weights_path, *model.get_weights())


def main(argv: list[str]) -> int:
    """python -m services.train.distributed FD WEIGHTS_PATH: one worker; the job on stdin."""
    frames = _Frames(int(argv[0]))
    job = train_pb2.TrainWorkerRequest.FromString(sys.stdin.buffer.read())
    try:
        _work(job, frames, argv[1])
    except Fail as exc:
        frames.send(b"E", f"{exc.code.name} {exc}".encode())
        return 1
    except BaseException as exc:  # reported to the chief, which ends the run
        import tensorflow as tf

        code = (
            "UNAVAILABLE"
            if isinstance(exc, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError))
            else "INTERNAL"
        )
        log.exception("worker %d failed", job.index)
        frames.send(b"E", f"{code} worker {job.index}: {type(exc).__name__}: {exc}".encode())
        return 1
    frames.send(b"W")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    sys.exit(main(sys.argv[1:]))
