"""SIGKILL (or SIGTERM) the gateway mid-run and start it again: the run record and its events are intact,
a watcher reconnects and resumes from its last sequence number without gaps or duplicates,
and the restarted gateway resumes the run it found RUNNING (training continues from the
run's checkpoint) instead of leaving it RUNNING for ever."""

import json
import signal

import pytest
from google.protobuf import json_format

from cookline.client import Client
from cookline.v1 import gateway_pb2
from helpers import (
    BIG_CSV_ROWS,
    iris_pipeline,
    watch_and_kill_after_checkpoint,
    watch_and_kill_mid_ingest,
    write_big_csv,
)
from services.common.store import store_from_env

# Long enough that the run is still training when the watcher has seen a few checkpointed epochs
# (an iris epoch of 30 batches takes a few ms once the train step is traced).
EPOCHS = 400
STACK_ENV = {"COOKLINE_SHARD_MB": "1"}  # the big CSV spans many shards


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_gateway_restarted_mid_run_resumes_the_run_and_the_watcher(stack, sig):
    services, env = stack
    store = store_from_env(env)
    name = f"gwrestart-{sig.name.lower()}"
    text = iris_pipeline(
        name,
        split="{validation: 0.2, seed: 1}",
        train=f"{{model: mlp, epochs: {EPOCHS}, batch_size: 4, learning_rate: 0.01}}",
    )
    persisted = {}

    def restart_gateway():
        services.stop("gateway", sig)
        persisted.update(json.loads(store.get_bytes(f"runs/{run.run_id}/run.json")))
        services.start("gateway")  # what a supervisor (compose, k8s) does

    with Client(env=env) as client:
        run = client.submit(text)
        events, killed_at = watch_and_kill_after_checkpoint(client, run.run_id, store, restart_gateway)
        final = client.get_run(run.run_id)

    assert killed_at is not None
    assert persisted["state"] == "RUN_STATE_RUNNING" and persisted["stage"] == "STAGE_TRAIN"
    assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED, final.reason
    # the watcher saw every event exactly once, across the restart
    assert [e.sequence for e in events] == list(range(len(events)))
    restarted = next(
        i
        for i, e in enumerate(events)
        if e.WhichOneof("event") == "stage" and "gateway restarted during train" in e.stage.message
    )
    assert restarted > killed_at[0]
    after = [e.train for e in events[restarted:] if e.WhichOneof("event") == "train"]
    assert after[0].resumed_from_epoch >= killed_at[1]  # from the checkpoint, not from epoch 0
    assert [p.epoch for p in after if p.epoch_finished][-1] == EPOCHS
    assert events[-1].WhichOneof("event") == "finished"
    # the stored log is the same as what the watcher saw
    lines = store.get_bytes(f"runs/{run.run_id}/events.jsonl").decode().splitlines()
    assert [json_format.Parse(line, gateway_pb2.RunEvent()) for line in lines] == events
    assert store.exists(f"models/{name}/{final.model.version}/cookline.json")
    assert list(store.list(f"runs/{run.run_id}/checkpoints/")) == []
    assert services.exited() == {}


def test_gateway_killed_mid_ingest_resumes_the_collect_stage(stack, tmp_path):
    services, env = stack
    store = store_from_env(env)
    source = tmp_path / "big.csv"
    write_big_csv(source)
    text = (
        f"name: gwcollect\ncollect: {{source: {source}, label: label}}\n"
        "train: {model: mlp, hidden_units: [8], epochs: 1, batch_size: 4096}\n"
    )
    manifests = []

    def restart_gateway():
        services.stop("gateway", signal.SIGKILL)
        manifests.extend(k for k in store.list("datasets/gwcollect/") if k.endswith("manifest.json"))
        services.start("gateway")

    with Client(env=env) as client:
        run = client.submit(text)
        events, killed_at = watch_and_kill_mid_ingest(client, run.run_id, restart_gateway)
        final = client.get_run(run.run_id)
    assert killed_at is not None
    assert manifests == []  # killed mid-ingest: no version was visible
    assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED, final.reason
    assert [e.sequence for e in events] == list(range(len(events)))
    assert any(
        e.WhichOneof("event") == "stage" and "gateway restarted during collect" in e.stage.message for e in events
    )
    prefix = f"datasets/gwcollect/{final.dataset.version}/"
    manifest = json.loads(store.get_bytes(prefix + "manifest.json"))
    assert manifest["num_rows"] == BIG_CSV_ROWS
    # the abandoned attempt (its caller died) removed its own shards; only the published ones remain
    shards = {prefix + s["key"] for s in manifest["shards"]}
    assert set(store.list("datasets/gwcollect/")) == shards | {prefix + "manifest.json"}
