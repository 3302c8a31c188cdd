"""SIGKILL the train service mid-run: the gateway retries and training continues from its
last checkpoint, not from epoch 0."""
import json
import os
import signal

from cookline.client import Client
from cookline.v1 import gateway_pb2
from services.common.store import NotFoundError, store_from_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IRIS_CSV = os.path.join(ROOT, "examples", "data", "iris.csv")
EPOCHS = 150


def test_train_killed_mid_run_resumes_from_its_checkpoint(stack):
    services, env = stack
    store = store_from_env(env)
    text = (f"name: crashy\ncollect: {{source: {IRIS_CSV}, label: species}}\nprocess: [{{standardize: {{}}}}]\n"
            f"split: {{validation: 0.2, seed: 1}}\n"
            f"train: {{model: mlp, epochs: {EPOCHS}, batch_size: 4, learning_rate: 0.01, progress_every_batches: 10}}\n")
    with Client(env=env) as client:
        run = client.submit(text)
        events, killed_after = [], None
        for event in client.watch(run.run_id):
            events.append(event)
            if killed_after is None and event.WhichOneof("event") == "train" and event.train.epoch_finished:
                try:
                    checkpoint = json.loads(store.get_bytes(f"runs/{run.run_id}/checkpoints/latest.json"))
                except NotFoundError:
                    continue
                if checkpoint["epoch"] >= 3:
                    services.procs["train"].send_signal(signal.SIGKILL)
                    services.procs["train"].wait()
                    killed_after = checkpoint["epoch"]
                    services.start("train")  # what a supervisor (compose, k8s) does
        final = client.get_run(run.run_id)

    assert killed_after is not None
    assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED, final.reason
    retry = next(i for i, e in enumerate(events)
                 if e.WhichOneof("event") == "stage" and "retrying" in e.stage.message)
    after = [e.train for e in events[retry:] if e.WhichOneof("event") == "train"]
    assert after[0].resumed_from_epoch >= killed_after
    finished_after = [p.epoch for p in after if p.epoch_finished]
    assert finished_after[0] == after[0].resumed_from_epoch + 1   # continued, not restarted at epoch 1
    assert finished_after[-1] == EPOCHS
    assert finished_after == sorted(finished_after)
    # the published model says it saw every epoch; the checkpoints are gone once it is published
    assert store.exists(f"models/crashy/{final.model.version}/cookline.json")
    assert list(store.list(f"runs/{run.run_id}/checkpoints/")) == []
