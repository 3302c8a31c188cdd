"""A run publishes one model version, however often train is asked for it.

- A gateway killed after train published the run's model but before the run recorded it: the
  restarted gateway resumes the run at its train stage, and train answers with the version this run
  already published (its record carries the run id) instead of training and publishing a second one.
- A second Train call of a run while the first still fits (what a restarted gateway sends while its
  predecessor's call is still in train): the first is cancelled and waited for, the second trains,
  and one version carries the run (the chaos soak once saw both publish)."""

import json
import signal
import threading
import time

import grpc

from cookline import channels
from cookline.client import Client
from cookline.v1 import data_pb2, gateway_pb2, pipeline_pb2, train_pb2, train_pb2_grpc
from dataplane import ingest
from helpers import IRIS_CSV, iris_pipeline
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


def test_a_second_call_of_a_run_cancels_the_first_and_the_run_publishes_one_version(stack):
    _, env = stack
    store = store_from_env(env)
    name, run_id = "attempts", "20990101-000000-attempt"
    ingest(env, name, IRIS_CSV, label="species")
    stub = train_pb2_grpc.TrainServiceStub(channels.channel("train", env))
    request = train_pb2.TrainRequest(
        run_id=run_id,
        dataset=data_pb2.DatasetRef(name=name),
        pipeline=pipeline_pb2.PipelineSpec(
            name=name, train=pipeline_pb2.TrainSpec(model="mlp", epochs=400, batch_size=16)
        ),
    )
    fitting = threading.Event()
    first: dict = {}

    def call_first() -> None:  # the earlier call: its client stays connected throughout
        try:
            for response in stub.Train(request, timeout=600):
                if response.HasField("progress"):
                    fitting.set()
                else:
                    first["result"] = response.result
        except grpc.RpcError as exc:
            first["error"] = exc
        finally:
            fitting.set()

    thread = threading.Thread(target=call_first)
    thread.start()
    assert fitting.wait(300)
    assert "error" not in first and "result" not in first  # still fitting when the second call comes
    second = list(stub.Train(request, timeout=600))[-1]
    thread.join(600)
    assert "error" in first, f"the first call was not cancelled: {first}"
    assert first["error"].code() == grpc.StatusCode.CANCELLED, first["error"]
    assert second.HasField("result")
    assert published_by(store, name, run_id) == [second.result.model.version]
    assert layout.model_versions(store, name) == [second.result.model.version]
