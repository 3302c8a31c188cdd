"""Two serve replicas on one store (real processes, S3 on SeaweedFS), as behind a headless Service:

- LoadModel reaches one replica; the other loads the model when a prediction asks for it, from the
  deployed record in the store (the state every replica follows), so round robin never meets a
  replica that answers "not loaded";
- one client channel over both addresses (gRPC round_robin, cookline's default retry policy) keeps
  answering, 0 failures, while one replica is SIGKILLed and started again.
The same over containers and DNS names: tests/e2e/test_compose_replicas.py."""

import os
import signal
import threading

import grpc
import pytest

import raw_models as rm
from cookline import channels
from cookline.client import Client
from cookline.v1 import model_pb2, serve_pb2, serve_pb2_grpc
from helpers import free_ports, unique_bucket
from services.common.store import store_from_env

ROWS = {"features": [[1.0, 2.0, 0.5], [0.0, -1.0, -3.0]]}


@pytest.fixture(scope="module")
def replicas(s3_server, tmp_path_factory):
    """Two serve processes on their own ports and one bucket; (env, the replicas' Stacks, addresses)."""
    from cookline.stack import Stack

    ports = free_ports(4, set(s3_server.ports.values()))
    base = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    base.update(s3_server.env(unique_bucket("replicas")))
    stacks, addresses = [], []
    for k in range(2):
        env = dict(
            base, COOKLINE_SERVE_ADDR=f"127.0.0.1:{ports[k]}", COOKLINE_SERVE_HTTP_ADDR=f"127.0.0.1:{ports[2 + k]}"
        )
        stack = Stack(env, log_dir=str(tmp_path_factory.mktemp(f"serve-{k}")))
        stack.start("serve")
        stacks.append(stack)
        addresses.append(env["COOKLINE_SERVE_ADDR"])
    try:
        for stack in stacks:
            stack.wait_healthy(timeout=180)
        yield base, stacks, addresses
    finally:
        for stack in stacks:
            stack.stop_all()


def _stub(address: str) -> serve_pb2_grpc.ServeServiceStub:
    return serve_pb2_grpc.ServeServiceStub(channels.channel("serve", target=address))


def test_a_model_deployed_on_one_replica_is_answered_by_the_other(replicas):
    env, _, (first, second) = replicas
    store = store_from_env(env)
    rm.publish_mixed(store, "onone", inputs=("features",))
    rm.publish_mixed(store, "never", inputs=("features",))  # published, never deployed
    _stub(first).LoadModel(serve_pb2.LoadModelRequest(model=model_pb2.ModelRef(name="onone")), timeout=180)
    with Client(serve=second) as client:
        assert [r["label"] for r in client.predict("onone", ROWS)] == ["pos", "neg"]
        with pytest.raises(grpc.RpcError) as caught:
            client.predict("never", ROWS)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "is not loaded; LoadModel deploys it" in caught.value.details()


def test_round_robin_over_both_keeps_answering_while_one_is_killed_and_restarted(replicas):
    env, stacks, addresses = replicas
    store = store_from_env(env)
    rm.publish_mixed(store, "rr", inputs=("features",))
    _stub(addresses[0]).LoadModel(serve_pb2.LoadModelRequest(model=model_pb2.ModelRef(name="rr")), timeout=180)
    target = "ipv4:" + ",".join(addresses)  # both replicas, as a headless Service's DNS name resolves
    counts = {"answered": 0, "failed": 0}
    failures: list[str] = []
    stop = threading.Event()

    def predict_until_stopped():
        with Client(serve=target) as client:
            while not stop.is_set() and counts["answered"] + counts["failed"] < 100_000:
                try:
                    assert [r["label"] for r in client.predict("rr", ROWS)] == ["pos", "neg"]
                    counts["answered"] += 1
                except grpc.RpcError as exc:
                    counts["failed"] += 1
                    failures.append(f"{exc.code().name}: {exc.details()}")

    loop = threading.Thread(target=predict_until_stopped)
    loop.start()
    try:
        victim = stacks[0]
        victim.stop("serve", signal.SIGKILL)
        before_restart = counts["answered"]
        victim.start("serve")  # what the supervisor does
        victim.wait_healthy(timeout=180)
        # the restarted replica loads the deployed model at start-up and answers again
        with Client(serve=addresses[0]) as direct:
            assert [r["label"] for r in direct.predict("rr", ROWS)] == ["pos", "neg"]
        after_restart = counts["answered"]
    finally:
        stop.set()
        loop.join(timeout=120)
    assert counts["failed"] == 0, failures[:5]
    assert after_restart > before_restart  # the other replica answered while the first was down
