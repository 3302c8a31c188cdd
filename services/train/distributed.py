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

Faults: a worker that fails or dies ends the attempt at once (a lost worker process or replica
is UNAVAILABLE: its TrainWorker stream breaks, so the chief does not wait for TensorFlow's own
collective timeout), and the chief kills the other workers. A retried run (the gateway retries
UNAVAILABLE) hands every worker the chief's last checkpoint: each one downloads it, verifies its
sha256 and loads its weights and optimizer state, and the fit continues at the next epoch with
that epoch's shuffle. A worker process also dies with the train service that started it: it
holds the read end of its stdin pipe, the "lifeline", and exits when the service's end closes.
A replica runs one worker at a time (its collective port is fixed).

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
import time
from collections.abc import Iterator
from typing import cast

import grpc

from cookline import channels
from cookline.v1 import data_pb2, train_pb2, train_pb2_grpc
from services.common.errors import Fail, status_of
from services.train.plan import Fitted, Plan

log = logging.getLogger("cookline.train")

PEERS_ENV = "COOKLINE_TRAIN_PEERS"
COLLECTIVE_OFFSET = 1000
_HEADER = struct.Struct(">cI")
# Seconds the chief waits for a peer replica to report SERVING (a supervisor restarting it), and a
# replica waits for its previous worker process to be gone, before the attempt fails UNAVAILABLE.
PEER_WAIT = 120.0
SLOT_WAIT = 60.0
# This replica's one worker process at a time: its collective endpoint (port + 1000) is fixed.
_SLOT = threading.Lock()


def peers(env=None) -> list[str]:
    """COOKLINE_TRAIN_PEERS: host:port of every train replica, the chief first (empty: none)."""
    text = (os.environ if env is None else env).get(PEERS_ENV, "")
    return [p.strip() for p in text.split(",") if p.strip()]


def collective_address(peer: str) -> str:
    """The collective endpoint of the worker process a train replica at `peer` starts."""
    host, _, port = peer.rpartition(":")
    return f"{host}:{int(port) + COLLECTIVE_OFFSET}"


# --- the chief --------------------------------------------------------------------------------


def fit(plan: Plan, fitted_ops, resume: dict | None = None):
    """Runs the distributed fit; yields worker 0's progress, returns a Fitted (the model, the last
    epoch's metrics).

    `fitted_ops` are the ops the training rows go through (with the default shuffle, if any);
    `resume` is the record of the run's last checkpoint (Checkpoints.record()), which every worker
    starts from, or None for a fresh start."""
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
    last_metrics: dict = {}
    if resume:
        job.resume.CopyFrom(
            train_pb2.TrainCheckpoint(epoch=int(resume["epoch"]), key=resume["key"], sha256=resume.get("sha256", ""))
        )
        last_metrics = dict(resume.get("metrics") or {})  # what the run reports if no epoch is left
    for k in range(1, workers):  # a replica a supervisor is restarting: wait for it, as the gateway does
        _wait_healthy(addresses[k], cancelled)
    events: queue.Queue = queue.Queue()
    _take_slot(lambda: not cancelled.is_set())
    scratch = tempfile.mkdtemp(prefix="cookline-workers-")
    weights = os.path.join(scratch, "weights.npz")
    chief = None
    calls = []
    try:
        chief = WorkerProcess(_for_worker(job, 0), weights)
        threading.Thread(target=_drain, args=(0, addresses[0], chief.events(), events), daemon=True).start()
        for k in range(1, workers):
            stub = train_pb2_grpc.TrainServiceStub(channels.channel("train", target=addresses[k]))
            # wait_for_ready: a replica just restarted is SERVING, but this channel may still be in reconnect backoff
            call = stub.TrainWorker(_for_worker(job, k), wait_for_ready=True)
            calls.append(call)
            threading.Thread(target=_drain, args=(k, addresses[k], call, events), daemon=True).start()
        log.info(
            "run %s: distributed fit on %d workers (%s)%s",
            request.run_id,
            workers,
            ", ".join(job.workers),
            f", every one resuming after epoch {job.resume.epoch}" if resume else "",
        )
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
        for call in calls:  # each replica kills its worker process as its call ends
            call.cancel()
        if chief is not None:
            chief.kill()
        _SLOT.release()
        if os.path.exists(weights):
            os.remove(weights)
        os.rmdir(scratch)


def _wait_healthy(address: str, cancelled: threading.Event) -> None:
    """Waits up to PEER_WAIT s for the train replica at `address` to report SERVING (UNAVAILABLE
    naming it when it does not; CANCELLED as soon as the run is)."""
    deadline = time.monotonic() + PEER_WAIT
    while True:
        if cancelled.is_set():
            raise Fail(grpc.StatusCode.CANCELLED, "training cancelled")
        try:
            channels.wait_healthy(address, timeout=1.0)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise Fail(
                    grpc.StatusCode.UNAVAILABLE,
                    f"train replica {address} (in {PEERS_ENV}) did not report SERVING within {PEER_WAIT:.0f} s",
                ) from None


def _take_slot(active) -> None:
    """Takes this replica's worker slot, waiting up to SLOT_WAIT s (while `active()`) for the previous
    worker process to be gone: after a failed attempt the chief's retry can arrive while that
    process is still being killed."""
    deadline = time.monotonic() + SLOT_WAIT
    while not _SLOT.acquire(timeout=0.2):
        if not active():
            raise Fail(grpc.StatusCode.CANCELLED, "training cancelled")
        if time.monotonic() > deadline:
            raise Fail(
                grpc.StatusCode.UNAVAILABLE,
                f"this train replica still runs another distributed training's worker after {SLOT_WAIT:.0f} s",
            )


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
    # Headers at once, as Train does: the call is committed, so a replica that dies under it is
    # UNAVAILABLE to the chief (which ends the attempt) rather than retried into a second worker.
    context.send_initial_metadata(())
    if not 0 < request.index < len(request.workers):
        raise Fail(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"index: {request.index} is not in [1, {len(request.workers)}) (worker 0 is the chief's)",
        )
    _take_slot(context.is_active)
    try:
        worker = WorkerProcess(request, None)
        context.add_callback(worker.kill)
        try:
            for event in worker.events():
                yield train_pb2.TrainWorkerResponse(progress=event.progress)
        finally:
            worker.kill()
    finally:
        _SLOT.release()


class WorkerProcess:
    """One worker of a distributed fit, in a fresh Python process with TF_CONFIG set.

    The job goes down its stdin (length-prefixed), which then stays open as the worker's lifeline:
    the worker exits when it closes (kill(), or the end of this process however it ends)."""

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
        payload = job.SerializeToString()
        stdin.write(struct.pack(">I", len(payload)) + payload)
        stdin.flush()
        self.lifeline = stdin

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
        try:
            self.lifeline.close()
        except (OSError, ValueError):  # the worker is gone (nothing reads the pipe), or closed meanwhile
            pass


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

    request, index, count = job.train, int(job.index), len(job.workers)
    checkpoints = Checkpoints(store_from_env(), request.run_id) if request.run_id else None
    first_epoch, resume_path = 0, None
    if job.HasField("resume"):  # verified before any collective starts: bad bytes fail this worker at once
        if checkpoints is None:
            raise Fail(grpc.StatusCode.INVALID_ARGUMENT, "resume: needs train.run_id (checkpoints are a run's)")
        first_epoch = int(job.resume.epoch)
        resume_path = checkpoints.download(job.resume.key, job.resume.sha256)
    keras_fix.apply()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
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
        # random ops are seeded by epoch: a resumed fit continues the sequence, as a single worker's does
        return EpochFeed(process_raw, asked, source, never, FeedSize(batch_size, first_epoch, rows=rows)).start()

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
    if resume_path:  # every worker loads the same weights and optimizer state into its distributed variables
        model._maybe_symbolic_build()  # the optimizer's variables exist only once built
        Checkpoints.restore(model, resume_path)
        log.info("worker %d: resuming after epoch %d from %s", index, first_epoch, job.resume.key)
    # _Progress puts its messages on a queue; here they go straight down the pipe to the train service.
    # Worker 0 alone writes the checkpoints.
    saving = Resume(checkpoints if index == 0 else None, first_epoch)
    progress = _Progress(cast(queue.Queue, frames), spec, int(job.train_rows), never, saving)
    try:
        model.fit(
            train_set,
            steps_per_epoch=train_data.steps(),
            epochs=int(spec.epochs),
            initial_epoch=first_epoch,
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


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError("the train service closed the worker's stdin before its job was read")
        data += chunk
    return data


def _lifeline(fd: int) -> None:
    """Exits this worker process at once when the train service's end of stdin closes. (The raw fd:
    a thread blocked in sys.stdin's buffered reader would hold its lock into interpreter shutdown.)"""
    while os.read(fd, 4096):
        pass
    os._exit(1)


def main(argv: list[str]) -> int:
    """python -m services.train.distributed FD WEIGHTS_PATH: one worker; the job (length-prefixed) on
    stdin, which stays open as the lifeline."""
    frames = _Frames(int(argv[0]))
    stdin = sys.stdin.fileno()
    (size,) = struct.unpack(">I", _read_exactly(stdin, 4))
    job = train_pb2.TrainWorkerRequest.FromString(_read_exactly(stdin, size))
    threading.Thread(target=_lifeline, args=(stdin,), name="lifeline", daemon=True).start()
    try:
        _work(job, frames, argv[1])
    except BaseException as exc:  # reported to the chief, which ends the run
        import tensorflow as tf

        if isinstance(exc, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError)):
            code, message = grpc.StatusCode.UNAVAILABLE, f"worker {job.index}: {type(exc).__name__}: {exc}"
        else:  # Fail, DATA_LOSS of a checkpoint, the store unavailable, ...
            code, message = status_of(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.exception("worker %d failed", job.index)
        frames.send(b"E", f"{code.name} {message}".encode())
        return 1
    frames.send(b"W")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    sys.exit(main(sys.argv[1:]))
