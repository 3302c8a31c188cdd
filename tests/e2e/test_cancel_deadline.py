"""Cancellation and deadlines cross every hop. Every server logs the end of each response
stream with the time it ended and how many are still open (services.common.server.StreamTracker):

- CancelRun mid-training ends the train, process and collect streams of the run within 2 s;
- a short deadline on a call to process ends process's stream and the collect stream under it.
"""

import os
import re
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest

from cookline import channels, tensors
from cookline.client import Client
from cookline.v1 import collect_pb2, collect_pb2_grpc, gateway_pb2, process_pb2, process_pb2_grpc
from helpers import iris_pipeline

# every epoch streams through process and collect (no epoch cache), slowly (tiny shards, batches)
STACK_ENV = {"COOKLINE_TRAIN_CACHE_MB": "0", "COOKLINE_SHARD_MB": "0.001"}
STREAM_END = re.compile(r"stream (\S+) ended at ([0-9.]+) after [0-9.]+ s \(([^)]*)\); (\d+) streams open")
METHODS = {
    "train": "/cookline.v1.TrainService/Train",
    "process": "/cookline.v1.ProcessService/Process",
    "collect": "/cookline.v1.CollectService/ReadDataset",
}


def stream_ends(services, service: str, since: float) -> list[tuple[str, float, str, int]]:
    with open(os.path.join(services.log_dir, f"{service}.log")) as f:
        found = [(m[1], float(m[2]), m[3], int(m[4])) for m in STREAM_END.finditer(f.read())]
    return [end for end in found if end[1] >= since]


def wait_all_closed(services, since: float, names, idle_before: tuple = (), timeout: float = 120.0) -> dict[str, float]:
    """The time each service's last data-plane stream ended once none is open; waits for it.

    Services in `idle_before` may have had no stream open at `since` (iris's epoch streams are
    short): once the first service's stream has ended after `since` (train: nothing opens new
    streams after it), their last end before `since` counts as ending at `since`."""
    deadline = time.monotonic() + timeout
    while True:
        done = {}
        for service in names:
            ends = [e for e in stream_ends(services, service, 0) if e[0] == METHODS[service]]
            if service not in idle_before or names[0] not in done:
                ends = [e for e in ends if e[1] >= since]
            if ends and ends[-1][3] == 0:
                done[service] = max(ends[-1][1], since)
        if len(done) == len(names):
            return done
        assert services.exited() == {}
        assert time.monotonic() < deadline, f"streams still open {timeout:.0f} s after {since}: {done}"
        try:
            services.procs["train"].wait(0.1)  # poll interval for the log lines; notices a crash
        except subprocess.TimeoutExpired:
            pass


def test_cancel_run_ends_every_stream_within_2_s(stack):
    services, env = stack
    text = iris_pipeline(
        "cancelme",
        split="{validation: 0.2, seed: 1}",
        train="{model: mlp, epochs: 500, batch_size: 1, learning_rate: 0.001, progress_every_batches: 5}",
    )
    with Client(env=env) as client:
        run = client.submit(text)
        cancelled_at = None
        for event in client.watch(run.run_id):
            if (
                cancelled_at is None
                and event.WhichOneof("event") == "train"
                and event.train.epoch >= 2
                and not event.train.epoch_finished
            ):
                cancelled_at = time.time()
                reply = client.cancel(run.run_id)
            last = event
        final = client.get_run(run.run_id)
    # CancelRun answers at once with the record as it was (the stage may not have stopped yet);
    # WatchRun's final event is the CANCELLED record (docs/clients.md)
    assert reply.state in (gateway_pb2.RUN_STATE_RUNNING, gateway_pb2.RUN_STATE_CANCELLED)
    assert last.WhichOneof("event") == "finished" and last.finished.state == gateway_pb2.RUN_STATE_CANCELLED
    assert final.state == gateway_pb2.RUN_STATE_CANCELLED and final.reason == "cancelled during train"
    ended = wait_all_closed(services, cancelled_at, ("train", "process", "collect"), idle_before=("process", "collect"))
    lags = {service: at - cancelled_at for service, at in ended.items()}
    assert max(lags.values()) <= 2.0, lags
    print("stream end after CancelRun (s):", {k: round(v, 3) for k, v in lags.items()})


def test_a_deadline_on_process_ends_the_collect_stream_under_it(stack):
    services, env = stack
    rows, width = 256, 784

    def upload():  # ~24 MB: far more than the flow-control windows of the two hops hold
        yield collect_pb2.UploadDatasetRequest(dataset="deadline", class_names=["a", "b"])
        for i in range(30):
            yield collect_pb2.UploadDatasetRequest(
                batch=tensors.batch_from_numpy(
                    {"features": np.full((rows, width), i, np.float32), "label": np.zeros(rows, np.int32)}, i
                )
            )

    dataset = (
        collect_pb2_grpc.CollectServiceStub(channels.channel("collect", env))
        .UploadDataset(upload(), timeout=300)
        .dataset.ref
    )
    process = process_pb2_grpc.ProcessServiceStub(channels.channel("process", env))
    since = time.time()
    call = process.Process(process_pb2.ProcessRequest(dataset=dataset, batch_size=rows), timeout=1.0)
    with pytest.raises(grpc.RpcError) as info:
        for _ in call:
            threading.Event().wait(0.2)  # a slow reader: the deadline passes mid-stream
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_all_closed(services, since, ("process", "collect"))
    # the collect stream under it was cut by the deadline process passed on, not run to its end
    ends = {
        service: [e for e in stream_ends(services, service, since) if e[0] == METHODS[service]][-1]
        for service in ("process", "collect")
    }
    assert ends["process"][2] == ends["collect"][2] == "call cancelled or expired", ends
