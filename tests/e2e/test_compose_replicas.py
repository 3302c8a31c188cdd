"""deploy/compose.replicas.yaml over deploy/docker-compose.yml on podman: 2 train, 2 process and 2 serve
replicas, each a container with its own network namespace, reaching each other by DNS name.

- `train.workers: 2` trains across the two train containers (collectives over the container network),
  the workers' streams come from the process replicas behind the one name `process`, and the weights
  match one process fed the same global batches (tests/support/reference_fit.py).
- A client with gRPC round-robin over `dns:///serve:50054` and cookline's default retry policy keeps
  predicting with 0 failed requests while one serve replica is SIGKILLed and podman's restart policy
  (`restart: unless-stopped`) brings it back.
- SIGKILLed services come back by the same policy, and a run submitted afterwards succeeds.

The container's main process is killed with SIGKILL from the host, as a crash or the OOM killer would:
`podman kill` marks the container stopped by the user, and podman's restart policy then leaves it down.
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from google.protobuf import json_format

from cookline import channels
from cookline.client import Client
from cookline.spec import train as train_spec
from cookline.v1 import gateway_pb2
from cookline.v1 import pipeline_pb2 as pb
from helpers import ROOT, SUPPORT, free_ports, iris_pipeline
from reference_fit import fit_one, load_batches, max_difference
from services.common.store import S3Store
from tools import podman, run, tool

# On a fresh machine the first image build (debootstrap, pip installing TensorFlow) takes minutes.
pytestmark = pytest.mark.timeout(1800)

OVERRIDE = "deploy/compose.replicas.yaml"
PUBLISHED = ("gateway", "collect", "train", "minio", "gateway_http")  # process and serve replicas publish none
REPLICAS = {"train": ["train_1", "train-1_1"], "process": ["process_1", "process_2"], "serve": ["serve_1", "serve_2"]}
EPOCHS, BATCH, WORKERS = 3, 10, 2


@pytest.fixture(scope="module")
def stack():
    """`make compose-up COMPOSE_OVERRIDES=deploy/compose.replicas.yaml` under a project of its own, on
    free host ports; (project, published addresses, the S3 store); brought down afterwards."""
    project = f"clreplicas{os.getpid()}"
    ports = dict(zip(PUBLISHED, free_ports(len(PUBLISHED), set()), strict=True))
    password = secrets.token_urlsafe(18)
    env = dict(
        os.environ,
        COOKLINE_PUBLISH_HOST="127.0.0.1",
        MINIO_PORT=str(ports["minio"]),
        MINIO_ROOT_USER="cookline-replicas",
        MINIO_ROOT_PASSWORD=password,
        COOKLINE_GATEWAY_PORT=str(ports["gateway"]),
        COOKLINE_GATEWAY_HTTP_PORT=str(ports["gateway_http"]),
        COOKLINE_COLLECT_PORT=str(ports["collect"]),
        COOKLINE_TRAIN_PORT=str(ports["train"]),
    )
    make = [tool("make"), "--no-print-directory", f"COMPOSE_PROJECT={project}", f"COMPOSE_OVERRIDES={OVERRIDE}"]
    try:
        run(make + ["compose-up"], env=env, timeout=1800)
        for service in ("gateway", "collect", "train"):  # from outside, through the published ports
            channels.wait_healthy(f"127.0.0.1:{ports[service]}", timeout=300)
        for name in REPLICAS["train"] + REPLICAS["process"] + REPLICAS["serve"]:  # from inside each container
            _healthy(project, name)
        store = S3Store(f"127.0.0.1:{ports['minio']}", "cookline-replicas", password, "cookline")
        yield project, {s: f"127.0.0.1:{p}" for s, p in ports.items()}, store
    except BaseException:
        print(_logs(project), file=sys.stderr)
        raise
    finally:
        subprocess.run(make + ["compose-down"], env=env, cwd=ROOT, capture_output=True, timeout=300)


def _service(name: str) -> str:
    """The compose service of a container ("train-1_1" -> "train-1")."""
    return name.rsplit("_", 1)[0]


def _runs(name: str) -> str:
    """The cookline service a container runs ("train-1_1" -> "train")."""
    return _service(name).split("-")[0]


def _healthy(project: str, name: str, timeout: float = 300) -> None:
    """Waits (inside the container) until its service reports SERVING on gRPC health."""
    podman(["exec", f"{project}_{name}", "cookline-entrypoint", "healthcheck", _runs(name), str(timeout)])


def _logs(project: str) -> str:
    out = []
    for name in ["minio_1", "collect_1", "gateway_1"] + [n for names in REPLICAS.values() for n in names]:
        proc = podman(["logs", "--tail", "30", f"{project}_{name}"], check=False)
        out.append(f"--- {name}\n{proc.stdout}{proc.stderr}")
    return "\n".join(out)


def _inspect(project: str, name: str, field: str) -> str:
    return podman(["inspect", "--format", "{{" + field + "}}", f"{project}_{name}"]).stdout.strip()


def _in_network(project: str, script: str, *args: str) -> list[str]:
    """argv running `script` (a file in tests/support) with python inside the gateway container,
    on the stack's network, where every service name resolves."""
    with open(os.path.join(SUPPORT, script)) as f:
        code = f.read()
    conf = os.path.join(ROOT, "deploy", "containers.conf")
    return ["env", f"CONTAINERS_CONF={conf}", tool("podman"), "exec", "-i", f"{project}_gateway_1"] + [
        "python",
        "-c",
        code,
        *args,
    ]


def _crash(project: str, name: str) -> int:
    """SIGKILLs the container's main process from the host (a crash, not `podman kill`); returns
    the container's restart count before the kill."""
    restarts = int(_inspect(project, name, ".RestartCount"))
    os.kill(int(_inspect(project, name, ".State.Pid")), signal.SIGKILL)
    return restarts


def _restarted(project: str, name: str, restarts_before: int, timeout: float = 300) -> None:
    """Waits until podman's restart policy has started the container again and it reports SERVING."""

    def restarted() -> bool:
        return (
            int(_inspect(project, name, ".RestartCount")) > restarts_before
            and _inspect(project, name, ".State.Running") == "true"
        )

    _until(restarted, lambda: f"{name} was not restarted within {timeout:.0f} s: {_state(project, name)}", timeout)
    _healthy(project, name, timeout)


def _state(project: str, name: str) -> str:
    """What podman says of a container (its state and last log lines), for a failure's message."""
    state = podman(["inspect", "--format", "{{json .State}}", f"{project}_{name}"], check=False)
    logs = podman(["logs", "--tail", "20", f"{project}_{name}"], check=False)
    return f"state {state.stdout.strip()} {state.stderr.strip()}\nlogs:\n{logs.stdout}{logs.stderr}"


@pytest.fixture(scope="module")
def dual(stack):
    """A `train.workers: 2` run of iris (with per-worker shuffles) on the two train containers."""
    _, addr, _ = stack
    pipeline = iris_pipeline(
        "replicas-dual",
        source="examples/data/iris.csv",  # the compose stack mounts examples/
        process="[{standardize: {}}, {shuffle: {buffer: 200, seed: 3}}]",
        split="{validation: 0.2, seed: 7}",
        train=f"{{model: mlp, epochs: {EPOCHS}, batch_size: {BATCH}, workers: {WORKERS}, optimizer: sgd, "
        "learning_rate: 0.1, seed: 11}",
    )
    with Client(gateway=addr["gateway"]) as client:
        record, events = client.run_and_wait(pipeline)
    assert record.state == gateway_pb2.RUN_STATE_SUCCEEDED, record.reason
    return record, events


def test_replicas_are_containers_with_their_own_namespaces_behind_dns_names(stack):
    project, _, _ = stack
    names = [n for names in REPLICAS.values() for n in names]
    sandboxes = {_inspect(project, n, ".NetworkSettings.SandboxKey") for n in names}
    assert len(sandboxes) == len(names), sandboxes  # one network namespace each
    network = f"{project}_default"
    ips = {n: _inspect(project, n, f'(index .NetworkSettings.Networks "{network}").IPAddress') for n in names}
    assert len(set(ips.values())) == len(names), ips
    resolve = "import socket, sys; print(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 1)}))"
    for service in ("process", "serve", "train", "train-1"):  # the names replicas share (or own)
        found = podman(["exec", f"{project}_gateway_1", "python", "-c", resolve, service]).stdout.strip()
        expected = sorted(ips[n] for n in names if _service(n) == service)
        assert found == str(expected), (service, found, expected)


def test_two_train_containers_train_as_one_worker_fed_the_same_global_batches(stack, dual, tmp_path):
    project, _, store = stack
    record, events = dual
    assert record.pipeline.train.workers == WORKERS
    ended = [e.train.epoch for e in events if e.WhichOneof("event") == "train" and e.train.epoch_finished]
    assert ended == list(range(1, EPOCHS + 1))
    # the published model's trained weights, read with TensorFlow alone
    prefix = f"models/{record.model.name}/{record.model.version}/"
    for key in store.list(prefix):
        store.get_file(key, str(tmp_path / key[len(prefix) :]))
    meta = json.loads((tmp_path / "cookline.json").read_text())
    import tensorflow as tf

    published = [v.numpy() for v in tf.saved_model.load(str(tmp_path)).trainable_variables]

    # what the two workers were fed, pulled from the process replicas on the stack's network
    asked = {
        "dataset": meta["dataset"],
        "split": meta["pipeline"]["split"],
        "ops": meta["process"],  # the fitted ops, the shuffle included
        "batch_size": BATCH,
        "workers": WORKERS,
        "epochs": EPOCHS,
    }
    proc = subprocess.run(_in_network(project, "reference_fit.py", json.dumps(asked)), capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    epochs = load_batches(proc.stdout)
    assert len(epochs) == EPOCHS and sum(len(x) for x, _ in epochs[0]) == 120  # 150 rows less 20% validation
    assert not np.array_equal(epochs[0][0][0], epochs[1][0][0])  # shuffled anew every epoch

    spec = train_spec.resolve(json_format.ParseDict(meta["pipeline"]["train"], pb.TrainSpec()))
    initial, trained = fit_one(spec, [4], 3, int(spec.seed) & 0xFFFFFFFF, epochs)
    difference = max_difference(published, trained)
    assert difference < 1e-5, difference
    assert max_difference(initial, trained) > 1e-2  # the comparison is between trained weights


def test_round_robin_client_keeps_predicting_while_a_serve_replica_is_killed_and_restarted(stack, dual):
    project, _, _ = stack
    record, _ = dual
    client = subprocess.Popen(
        _in_network(project, "replica_client.py", "dns:///serve:50054", record.model.name, "600"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout.readline().strip() == "ready", client.stderr.read()
        victim = REPLICAS["serve"][0]
        for name in REPLICAS["serve"]:  # round robin: both replicas answer
            _until(lambda name=name: _requests(project, name) > 0, f"{name} answered no prediction")
        client.stdin.write("mark\n")
        client.stdin.flush()
        before = int(client.stdout.readline())
        restarts = _crash(project, victim)
        _restarted(project, victim, restarts)
        # round robin reaches the restarted replica again (its counts start from 0)
        _until(lambda: _requests(project, victim) > 0, "the restarted serve replica got no prediction")
        client.stdin.write("stop\n")
        client.stdin.flush()
        summary = json.loads(client.stdout.readline())
    finally:
        client.kill()
        client.wait()
    assert summary["failed"] == 0, summary
    assert summary["answered"] == summary["sent"] and summary["answered"] > before, summary
    assert summary["labels"] == ["setosa", "versicolor", "virginica"], summary
    assert len(summary["addresses"]) == 2, summary  # one name, both replicas


STATS = (
    "from cookline import channels; from cookline.v1 import serve_pb2, serve_pb2_grpc; "
    "stub = serve_pb2_grpc.ServeServiceStub(channels.channel('serve', target='127.0.0.1:50054')); "
    "print(sum(m.requests for m in stub.GetStats(serve_pb2.GetStatsRequest(), timeout=60).models))"
)


def _requests(project: str, name: str) -> int:
    """Predictions the serve replica has answered since it (last) started: its GetStats, asked inside it."""
    return int(podman(["exec", f"{project}_{name}", "python", "-c", STATS]).stdout)


def _until(condition, message, timeout: float = 300) -> None:
    """Polls `condition` until it holds; fails with `message` (a string, or a function making one)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message() if callable(message) else message
        time.sleep(0.5)  # poll interval


def test_restart_policy_brings_killed_services_back_and_a_new_run_succeeds(stack):
    project, addr, _ = stack
    # One at a time: four `podman container cleanup` processes restarting at once on a loaded 2-core
    # runner once left the gateway down (podman 4.3), which is podman's race, not cookline's.
    for name in ["gateway_1", "collect_1", "process_1", "train_1"]:
        _restarted(project, name, _crash(project, name))
    with Client(gateway=addr["gateway"], serve=addr["gateway"]) as client:
        record, _ = client.run_and_wait(
            iris_pipeline(
                "replicas-after-restart",
                source="examples/data/iris.csv",
                train=f"{{model: mlp, epochs: 10, batch_size: {BATCH}}}",  # one worker: no fresh TF processes
            )
        )
        assert record.state == gateway_pb2.RUN_STATE_SUCCEEDED, record.reason
        answers = client.predict(record.model.name, [[5.1, 3.5, 1.4, 0.2]])
    assert answers[0]["label"] == "setosa"
