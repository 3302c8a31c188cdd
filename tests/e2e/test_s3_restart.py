"""Restart the S3 server in the middle of a run: every store call retries with back-off
(COOKLINE_STORE_RETRY_S), the stages carry on, and the run completes with nothing lost.

This module has its own SeaweedFS server, so restarting it leaves other tests alone."""

import json
import os
import subprocess

import pytest

from cookline.client import Client
from cookline.v1 import gateway_pb2
from helpers import iris_pipeline
from s3server import SeaweedS3
from services.common.store import store_from_env

EPOCHS = 40
# every epoch streams through process and collect, which read shards from the store
MARK = "retrying in 2.0 s"  # logged by a store call once its back-off reaches the cap
STACK_ENV = {"COOKLINE_TRAIN_CACHE_MB": "0", "COOKLINE_SHARD_MB": "0.002"}


@pytest.fixture(scope="module")
def s3_server():
    """A SeaweedFS server of this module only (overrides the session's)."""
    with SeaweedS3() as server:
        yield server


def outage(services, s3_server) -> None:
    """Stops the S3 server until a store call has retried past the store's few quick attempts
    (its back-off reached the 2 s cap, about 3 s into the outage), then starts it again on
    the same ports and data dir."""
    logs = [os.path.join(services.log_dir, f"{name}.log") for name in ("gateway", "train", "process", "collect")]

    def count(text):
        return sum(open(path).read().count(text) for path in logs)

    seen = count(MARK)
    s3_server._terminate()
    while count(MARK) == seen:
        assert services.exited() == {}
        assert count("unavailable after") == 0, "a store call gave up during the outage"
        try:
            services.procs["train"].wait(0.1)  # poll interval for the log line; also notices a crash
        except subprocess.TimeoutExpired:
            pass
    s3_server.start()


def test_s3_restart_during_a_run(stack, s3_server):
    services, env = stack
    text = iris_pipeline(
        "s3restart",
        split="{validation: 0.2, seed: 1}",
        train=f"{{model: mlp, epochs: {EPOCHS}, batch_size: 8, learning_rate: 0.01}}",
    )
    restarts = 0
    with Client(env=env) as client:
        run = client.submit(text)
        events = []
        for event in client.watch(run.run_id):
            events.append(event)
            kind = event.WhichOneof("event")
            if kind == "train" and event.train.epoch_finished and event.train.epoch in (3, 20):
                outage(services, s3_server)
                restarts += 1
        final = client.get_run(run.run_id)

    assert restarts == 2  # each outage outlasted a store call's quick retries
    assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED, final.reason
    assert [e.sequence for e in events] == list(range(len(events)))  # no gap, no duplicate
    epochs = [e.train.epoch for e in events if e.WhichOneof("event") == "train" and e.train.epoch_finished]
    assert epochs[-1] == EPOCHS
    assert final.metrics["accuracy"] > 0.6
    store = store_from_env(env)
    # the record and every event reached the store; the model and dataset are complete
    persisted = json.loads(store.get_bytes(f"runs/{run.run_id}/run.json"))
    assert persisted["state"] == "RUN_STATE_SUCCEEDED"
    lines = store.get_bytes(f"runs/{run.run_id}/events.jsonl").decode().splitlines()
    assert len(lines) == len(events)
    assert store.exists(f"models/s3restart/{final.model.version}/cookline.json")
    manifest = json.loads(store.get_bytes(f"datasets/s3restart/{final.dataset.version}/manifest.json"))
    assert manifest["num_rows"] == 150
    assert services.exited() == {}
