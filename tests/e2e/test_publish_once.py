"""A gateway killed after train published the run's model but before the run recorded it: the restarted
gateway resumes the run at its train stage, and train answers with the version this run already
published (its record carries the run id) instead of training and publishing a second one."""

import json
import signal
import time

from cookline.client import Client
from cookline.v1 import gateway_pb2
from helpers import iris_pipeline
from services.common import layout
from services.common.store import store_from_env

PUBLISH_WAIT_S = 300  # how long train may take to finish and publish while the gateway is frozen


def published_by(store, name: str, run_id: str) -> list[int]:
    return [v for v in layout.model_versions(store, name) if layout.read_model_record(store, name, v).run_id == run_id]


def test_gateway_killed_between_publish_and_record_resumes_without_a_second_version(stack):
    services, env = stack
    store = store_from_env(env)
    name = "publish-once"
    text = iris_pipeline(name, train="{model: mlp, epochs: 3}")
    gateway = services.procs["gateway"]
    with Client(env=env) as client:
        run = client.submit(text)
        for event in client.watch(run.run_id):
            if event.WhichOneof("event") == "train":
                break  # training has started: the gateway waits on train's stream
    # Freeze the gateway: train finishes and publishes, but the gateway cannot record the result.
    gateway.send_signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + PUBLISH_WAIT_S
        while not published_by(store, name, run.run_id):
            assert time.monotonic() < deadline, "train did not publish the run's model"
            time.sleep(0.2)  # polling the store: nothing else says when train has published
        record = json.loads(store.get_bytes(f"runs/{run.run_id}/run.json"))
        assert record["stage"] == "STAGE_TRAIN" and "model" not in record  # published, not recorded
    finally:
        gateway.send_signal(signal.SIGKILL)
        gateway.wait()
    services.start("gateway")  # what a supervisor does
    services.wait_healthy(timeout=120)
    with Client(env=env) as client:
        for _event in client.watch(run.run_id):
            pass
        final = client.get_run(run.run_id)
    assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED, final.reason
    assert layout.model_versions(store, name) == [1]  # no second version
    assert final.model.version == 1
    assert published_by(store, name, run.run_id) == [1]
    assert list(store.list(f"runs/{run.run_id}/checkpoints/")) == []
    assert services.exited() == {}
