"""Two serve replicas on one store (real processes, S3 on SeaweedFS), as behind a headless Service,
and a gateway whose serve address names both (`ipv4:a,b`, as a headless Service's name resolves):

- the registry CLI (`cookline models`, `alias`, `deploy`, `undeploy`) run as a user runs it: deploy,
  a version swap and undeploy reach every replica (RegistryService.DeployModel / UndeployModel),
  a replica that is down is reported (exit code 1) and loads the deployed version when it is back,
  and unknown models, versions and aliases fail with a message and exit code 2; `cookline gc`
  sweeps the files of a publish that died;
- LoadModel sent to one replica directly: the other loads the model when a prediction asks for it,
  from the deployed record in the store (the state every replica follows), so round robin never
  meets a replica that answers "not loaded";
- one client channel over both addresses (gRPC round_robin, cookline's default retry policy) keeps
  answering, 0 failures, while one replica is SIGKILLed and started again.
The same over containers and DNS names: tests/e2e/test_compose_replicas.py."""

import os
import signal
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import raw_models as rm
from cookline import channels
from cookline.client import Client
from cookline.v1 import model_pb2, serve_pb2, serve_pb2_grpc
from helpers import cli, free_ports, stack_env, unique_bucket
from services.common import layout
from services.common.store import store_from_env

ROWS = {"features": [[1.0, 2.0, 0.5], [0.0, -1.0, -3.0]]}


@pytest.fixture(scope="module")
def replicas(s3_server, tmp_path_factory):
    """Two serve processes on their own ports and one bucket, and a gateway reaching both;
    (env, the replicas' Stacks, addresses, the gateway's env: what the CLI runs with)."""
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
    gateway_env = stack_env(base, {}, set(s3_server.ports.values()) | set(ports))
    gateway_env["COOKLINE_SERVE_ADDR"] = "ipv4:" + ",".join(addresses)
    gateway = Stack(gateway_env, log_dir=str(tmp_path_factory.mktemp("gateway")))
    gateway.start("gateway")
    try:
        for stack in [*stacks, gateway]:
            stack.wait_healthy(timeout=180)
        yield base, stacks, addresses, gateway_env
    finally:
        for stack in [*stacks, gateway]:
            stack.stop_all()


def _stub(address: str) -> serve_pb2_grpc.ServeServiceStub:
    return serve_pb2_grpc.ServeServiceStub(channels.channel("serve", target=address))


def _model_health(address: str, name: str) -> str:
    """The replica's health status of one model, read without a prediction (which could load it):
    SERVING once loaded, NOT_SERVING after an unload, NOT_FOUND when it never loaded it."""
    with channels.raw_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=name), timeout=30)
        except grpc.RpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _predict_version(address: str, name: str, version: int) -> str:
    """The labels one replica answers with `version`, or the error code it answers."""
    with Client(serve=address) as client:
        try:
            return ",".join(r["label"] for r in client.predict(name, ROWS, version))
        except grpc.RpcError as exc:
            return exc.code().name


def test_cli_deploy_swap_and_undeploy_reach_every_replica(replicas):
    env, _, addresses, gateway = replicas
    store = store_from_env(env)
    for _ in range(2):
        rm.publish_mixed(store, "both", inputs=("features",))
    done = cli("deploy", "both", "--version", "1", env=gateway)
    assert done.returncode == 0, done.stderr
    assert "model both version 1 deployed (version) on 2 of 2 serve replicas" in done.stderr
    # told, not loaded on demand: no prediction has asked either replica yet
    assert [_model_health(a, "both") for a in addresses] == ["SERVING", "SERVING"]

    done = cli("deploy", "both", env=gateway)  # the newest: version 2, on both
    assert done.returncode == 0, done.stderr
    assert "version 2 deployed (latest) on 2 of 2" in done.stderr
    assert [_predict_version(a, "both", 2) for a in addresses] == ["pos,neg", "pos,neg"]

    listed = cli("models", env=gateway)
    assert listed.returncode == 0, listed.stderr
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith("both "))
    assert row[:3] == ["both", "1-2", "2"], listed.stdout

    done = cli("undeploy", "both", env=gateway)
    assert done.returncode == 0, done.stderr
    assert "model both version 2 undeployed" in done.stderr
    assert done.stderr.count("stopped serving version 2") == 2, done.stderr
    # no replica keeps answering the undeployed model, and none loads it again on demand
    assert [_model_health(a, "both") for a in addresses] == ["NOT_SERVING", "NOT_SERVING"]
    assert [_predict_version(a, "both", 0) for a in addresses] == ["UNAVAILABLE", "UNAVAILABLE"]
    assert store.exists("models/both/deployed.json") is False


def test_cli_reports_a_replica_that_is_down_and_it_catches_up_at_start(replicas):
    env, stacks, addresses, gateway = replicas
    store = store_from_env(env)
    rm.publish_mixed(store, "halfway", inputs=("features",))
    stacks[1].stop("serve")
    try:
        done = cli("deploy", "halfway", env=gateway)
        assert done.returncode == 1, done.stderr
        assert "deployed (latest) on 1 of 2 serve replicas" in done.stderr
        assert f"{addresses[1]}: UNAVAILABLE" in done.stderr
        assert "1 of 2 serve replicas failed" in done.stderr
    finally:
        stacks[1].start("serve")
        stacks[1].wait_healthy(timeout=180)
    channels.wait_healthy(addresses[1], timeout=180, service="halfway")  # loaded from the deployed record
    assert _predict_version(addresses[1], "halfway", 1) == "pos,neg"
    assert cli("undeploy", "halfway", env=gateway).returncode == 0


def test_cli_lists_models_and_moves_aliases(replicas):
    env, _, _, gateway = replicas
    store = store_from_env(env)
    for _ in range(2):
        rm.publish_mixed(store, "listed", inputs=("features",))
    for version in (1, 2):
        done = cli("alias", "listed", "production", str(version), env=gateway)
        assert done.returncode == 0, done.stderr
        assert f"alias production of model listed -> version {version}" in done.stderr
    listed = cli("models", env=gateway)
    row = next(line for line in listed.stdout.splitlines() if line.startswith("listed "))
    assert row.split()[:4] == ["listed", "1-2", "-", "production=2"], listed.stdout
    versions = cli("models", "listed", env=gateway)
    assert versions.returncode == 0, versions.stderr
    lines = versions.stdout.splitlines()
    assert lines[0].split() == ["VERSION", "CREATED", "DEPLOYED", "ALIASES", "DATASET", "METRIC"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2"]
    assert "production" in lines[2] and "production" not in lines[1]
    as_json = cli("models", "listed", "--output", "json", env=gateway)
    assert '"aliases": {"production": "2"}' in as_json.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["models", "nosuch"], "NOT_FOUND: model 'nosuch' not found"),
        (["alias", "nosuch", "production", "1"], "NOT_FOUND: model 'nosuch' version 1 not found"),
        (["alias", "never", "production", "99"], "NOT_FOUND: model 'never' version 99 not found"),
        (["alias", "never", "../x", "1"], "INVALID_ARGUMENT: alias"),
        (["deploy", "nosuch"], "NOT_FOUND: model 'nosuch' not found"),
        (["deploy", "never", "--version", "99"], "NOT_FOUND: model 'never' version 99 not found"),
        (["deploy", "never", "--alias", "nope"], "NOT_FOUND: alias 'nope' of model 'never' not found"),
        (["undeploy", "never"], "NOT_FOUND: model 'never' is not deployed"),
        (["undeploy", "nosuch"], "NOT_FOUND: model 'nosuch' not found"),
    ],
)
def test_cli_registry_errors_name_what_is_missing(replicas, args, message):
    env, _, _, gateway = replicas
    store = store_from_env(env)
    if not store.exists("models/never/1/cookline.json"):
        rm.publish_mixed(store, "never", inputs=("features",))  # published, never deployed
    done = cli(*args, env=gateway)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr, done.stderr


def test_cli_gc_sweeps_a_publish_that_died(replicas):
    env, _, _, gateway = replicas
    store = store_from_env(env)
    died = layout.claim_model_version(store, "died", "run-killed")  # train killed mid-upload
    store.put_bytes(died.prefix + "saved_model.pb", b"x" * 1000)
    recent = cli("gc", "--dry-run", env=gateway)  # the default age (an hour): still in progress
    assert recent.returncode == 0 and "0 abandoned model versions" in recent.stderr, recent.stderr
    dry = cli("gc", "--older-than", "0", "--dry-run", env=gateway)
    assert "died version 1: would remove 1 files (1000 bytes)" in dry.stdout, dry.stdout + dry.stderr
    assert store.exists(died.prefix + "saved_model.pb")
    done = cli("gc", "--older-than", "0", env=gateway)
    assert done.returncode == 0, done.stderr
    assert "died version 1: removed 1 files (1000 bytes)" in done.stdout
    assert list(store.list(died.prefix)) == [died.prefix + layout.MODEL_CLAIM]  # the number stays skipped
    bad = cli("gc", "--older-than", "-1", env=gateway)
    assert bad.returncode == 2 and "INVALID_ARGUMENT: older_than_seconds: -1 is negative" in bad.stderr


def test_a_model_deployed_on_one_replica_is_answered_by_the_other(replicas):
    env, _, (first, second), _ = replicas
    store = store_from_env(env)
    rm.publish_mixed(store, "onone", inputs=("features",))
    if not store.exists("models/never/1/cookline.json"):
        rm.publish_mixed(store, "never", inputs=("features",))  # published, never deployed
    _stub(first).LoadModel(serve_pb2.LoadModelRequest(model=model_pb2.ModelRef(name="onone")), timeout=180)
    with Client(serve=second) as client:
        assert [r["label"] for r in client.predict("onone", ROWS)] == ["pos", "neg"]
        with pytest.raises(grpc.RpcError) as caught:
            client.predict("never", ROWS)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "is not loaded; LoadModel deploys it" in caught.value.details()


def test_round_robin_over_both_keeps_answering_while_one_is_killed_and_restarted(replicas):
    env, stacks, addresses, _ = replicas
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
        # the restarted replica loads the deployed models at start-up (in the background: its health
        # says when this one is ready) and answers again
        channels.wait_healthy(addresses[0], timeout=180, service="rr")
        with Client(serve=addresses[0]) as direct:
            assert [r["label"] for r in direct.predict("rr", ROWS)] == ["pos", "neg"]
        after_restart = counts["answered"]
    finally:
        stop.set()
        loop.join(timeout=120)
    assert counts["failed"] == 0, failures[:5]
    assert after_restart > before_restart  # the other replica answered while the first was down
