"""SIGKILL the train service mid-run: the gateway retries and training continues from its
last checkpoint, not from epoch 0."""

import signal

from cookline.client import Client
from cookline.v1 import gateway_pb2
from helpers import iris_pipeline, watch_and_kill_after_checkpoint
from services.common.store import store_from_env

EPOCHS = 150


def test_train_killed_mid_run_resumes_from_its_checkpoint(stack):
    services, env = stack
    store = store_from_env(env)
    text = iris_pipeline(
        "crashy",
        split="{validation: 0.2, seed: 1}",
        train=f"{{model: mlp, epochs: {EPOCHS}, batch_size: 4, learning_rate: 0.01, progress_every_batches: 10}}",
    )

    def restart_train():
        services.procs["train"].send_signal(signal.SIGKILL)
        services.procs["train"].wait()
        services.start("train")  # what a supervisor (compose, k8s) does

    with Client(env=env) as client:
        run = client.submit(text)
        events, killed_at = watch_and_kill_after_checkpoint(client, run.run_id, store, restart_train)
        final = client.get_run(run.run_id)

    assert killed_at is not None
    killed_after = killed_at[1]
    assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED, final.reason
    retry = next(i for i, e in enumerate(events) if e.WhichOneof("event") == "stage" and "retrying" in e.stage.message)
    after = [e.train for e in events[retry:] if e.WhichOneof("event") == "train"]
    assert after[0].resumed_from_epoch >= killed_after
    finished_after = [p.epoch for p in after if p.epoch_finished]
    assert finished_after[0] == after[0].resumed_from_epoch + 1  # continued, not restarted at epoch 1
    assert finished_after[-1] == EPOCHS
    assert finished_after == sorted(finished_after)
    # the published model says it saw every epoch; the checkpoints are gone once it is published
    assert store.exists(f"models/crashy/{final.model.version}/cookline.json")
    assert list(store.list(f"runs/{run.run_id}/checkpoints/")) == []
