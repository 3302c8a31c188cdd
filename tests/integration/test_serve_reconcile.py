"""Two serve replicas on one store (real processes, S3 on SeaweedFS) following the store's deployed
records (COOKLINE_SERVE_RECONCILE_S, here 1 s): LoadModel and UnloadModel sent to one replica's
address reach the other through the record alone, with no prediction asking it: a deploy, a
version swap and an undeploy."""

import os
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import raw_models as rm
from cookline import channels
from cookline.client import Client
from cookline.v1 import model_pb2, serve_pb2, serve_pb2_grpc
from helpers import free_ports, unique_bucket
from services.common.store import store_from_env

ROWS = {"features": [[1.0, 2.0, 0.5], [0.0, -1.0, -3.0]]}
FOLLOW_S = 120  # how long a replica may take to follow a record (its period is 1 s; loads are slow on a busy runner)


@pytest.fixture(scope="module")
def replicas(s3_server, tmp_path_factory):
    """Two serve processes on one bucket, reading its deployed records every second; (env, addresses)."""
    from cookline.stack import Stack

    ports = free_ports(4, set(s3_server.ports.values()))
    base = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", COOKLINE_SERVE_RECONCILE_S="1")
    base.update(s3_server.env(unique_bucket("reconcile")))
    stacks, addresses = [], []
    try:
        for k in range(2):
            env = dict(
                base, COOKLINE_SERVE_ADDR=f"127.0.0.1:{ports[k]}", COOKLINE_SERVE_HTTP_ADDR=f"127.0.0.1:{ports[2 + k]}"
            )
            stack = Stack(env, log_dir=str(tmp_path_factory.mktemp(f"serve-{k}")))
            stacks.append(stack)
            stack.start("serve")
            addresses.append(env["COOKLINE_SERVE_ADDR"])
        for stack in stacks:
            stack.wait_healthy(timeout=180)
        yield base, addresses
    finally:
        for stack in stacks:
            stack.stop_all()


def _stub(address: str) -> serve_pb2_grpc.ServeServiceStub:
    return serve_pb2_grpc.ServeServiceStub(channels.channel("serve", target=address))


def _watch_until(address: str, name: str, status: int) -> None:
    """Waits on the replica's health Watch stream (no prediction, which could load the model) until
    the model's status is `status`."""
    with channels.raw_channel(address) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=name), timeout=FOLLOW_S
        )
        for reply in stream:
            if reply.status == status:
                stream.cancel()
                return


def _served_version(address: str, name: str) -> int:
    """The version the replica answers for `name` without a version (its deployed one)."""
    with Client(serve=address) as client:
        return client.model_metadata(name).model.version


def test_a_replica_follows_deploys_swaps_and_undeploys_made_through_the_other(replicas):
    env, (first, second) = replicas
    store = store_from_env(env)
    for _ in range(2):
        rm.publish_mixed(store, "follow", inputs=("features",))
    _stub(first).LoadModel(serve_pb2.LoadModelRequest(model=model_pb2.ModelRef(name="follow", version=1)), timeout=180)
    _watch_until(second, "follow", health_pb2.HealthCheckResponse.SERVING)  # loaded from the record alone
    assert _served_version(second, "follow") == 1

    _stub(first).LoadModel(serve_pb2.LoadModelRequest(model=model_pb2.ModelRef(name="follow", version=2)), timeout=180)
    deadline = time.monotonic() + FOLLOW_S
    while _served_version(second, "follow") != 2:  # a swap keeps the model SERVING: its answers tell
        assert time.monotonic() < deadline, "the other replica did not swap to version 2"
        time.sleep(0.2)  # poll interval: the swap happens at the replica's next read of the record

    _stub(first).UnloadModel(serve_pb2.UnloadModelRequest(name="follow"), timeout=60)
    _watch_until(second, "follow", health_pb2.HealthCheckResponse.NOT_SERVING)
    with Client(serve=second) as client, pytest.raises(grpc.RpcError) as caught:
        client.predict("follow", ROWS)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # dropped, and not loaded again on demand
