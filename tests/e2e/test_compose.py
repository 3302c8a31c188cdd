"""deploy/docker-compose.yml really started: podman + podman-compose with locally built images
(a debootstrap base, the app image, SeaweedFS standing in for MinIO), then the Node.js example
and the documented `cookline run` quick start against the published ports."""

import json
import os
import secrets
import subprocess
import sys

import pytest
from rest_client import http_call

from cookline import channels
from helpers import ROOT, free_ports, remote_data
from tools import podman, run, tool

# On a fresh machine the first image build (debootstrap, pip installing TensorFlow) takes minutes.
pytestmark = pytest.mark.timeout(1800)

SERVICES = ("gateway", "collect", "process", "train", "serve")


@pytest.fixture(scope="module")
def compose_stack():
    """The compose stack brought up as the README shows it, `make compose-up` with no make variables
    (so the default project name is the one that runs), on free host ports; brought down afterwards."""
    project = "cookline"
    ports = dict(zip(SERVICES + ("minio", "serve_http", "gateway_http"), free_ports(8, set()), strict=True))
    env = dict(
        os.environ,
        COOKLINE_PUBLISH_HOST="127.0.0.1",
        MINIO_PORT=str(ports["minio"]),
        MINIO_ROOT_USER="cookline-e2e",
        MINIO_ROOT_PASSWORD=secrets.token_urlsafe(18),
    )
    env.update({f"COOKLINE_{s.upper()}_PORT": str(ports[s]) for s in SERVICES + ("serve_http", "gateway_http")})
    env.pop("COMPOSE_PROJECT", None)
    make = [tool("make"), "--no-print-directory"]
    try:
        run(make + ["compose-up"], env=env, timeout=1800)
        for service in SERVICES:  # from outside, through the published ports
            channels.wait_healthy(f"127.0.0.1:{ports[service]}", timeout=180)
        yield project, {s: f"127.0.0.1:{p}" for s, p in ports.items()}
    except BaseException:
        print(_logs(project), file=sys.stderr)
        raise
    finally:
        subprocess.run(make + ["compose-down"], env=env, cwd=ROOT, capture_output=True, timeout=300)


def _logs(project: str) -> str:
    out = []
    for service in ("minio",) + SERVICES:
        proc = podman(["logs", "--tail", "30", f"{project}_{service}_1"], check=False)
        out.append(f"--- {service}\n{proc.stdout}{proc.stderr}")
    return "\n".join(out)


def test_node_example_runs_iris_on_the_compose_stack(compose_stack):
    project, addr = compose_stack
    env = dict(os.environ, COOKLINE_GATEWAY_ADDR=addr["gateway"], COOKLINE_SERVE_ADDR=addr["serve"])
    try:
        proc = run([tool("node"), "examples/iris.js"], env=env, cwd=os.path.join(ROOT, "clients", "node"))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_logs(project)}") from None
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["state"] == "RUN_STATE_SUCCEEDED"
    assert [p["label"] for p in summary["predictions"]] == ["setosa", "versicolor", "virginica"]


def test_cookline_run_quick_start_against_the_compose_stack(compose_stack):
    _, addr = compose_stack
    proc = run(
        [
            os.path.join(ROOT, ".venv", "bin", "cookline"),
            "run",
            "examples/iris.yaml",
            "--output",
            "json",
            "--gateway",
            addr["gateway"],
        ]
    )
    record = json.loads(proc.stdout)
    assert record["state"] == "RUN_STATE_SUCCEEDED" and record["metrics"]["val_accuracy"] >= 0.9


def test_every_container_passes_its_grpc_healthcheck(compose_stack):
    project, _ = compose_stack
    for service in SERVICES:
        podman(["healthcheck", "run", f"{project}_{service}_1"])


def test_serve_rest_is_published(compose_stack):
    """Serve's OIP v2 REST port (COOKLINE_SERVE_HTTP_ADDR) is reachable from outside, like the gRPC ports."""
    _, addr = compose_stack
    env = {"COOKLINE_SERVE_HTTP_ADDR": addr["serve_http"]}
    status, _, body = http_call(env, "serve", "GET", "/v2/health/live")
    assert status == 200 and json.loads(body) == {"live": True}
    status, _, body = http_call(env, "serve", "GET", "/v2")
    assert status == 200 and json.loads(body)["name"] == "cookline"


# --- proven remote: the containers cannot see the host's paths -----------------------------------


def remote_env(addr) -> dict:
    """One address for everything: uploads, runs and predictions all go to the gateway."""
    return dict(os.environ, COOKLINE_GATEWAY_ADDR=addr["gateway"], COOKLINE_SERVE_ADDR=addr["gateway"])


@pytest.mark.parametrize("language", ["node", "go"])
def test_node_and_go_upload_train_by_name_and_predict_on_the_compose_stack(compose_stack, tmp_path, language):
    project, addr = compose_stack
    csv_file, images = remote_data(tmp_path)
    prefix = f"{language}-compose"
    if language == "node":
        argv, cwd = [tool("node"), "examples/remote.js"], os.path.join(ROOT, "clients", "node")
    else:
        argv, cwd = [tool("go"), "run", "./cmd/remote"], os.path.join(ROOT, "clients", "go")
    try:
        proc = run(argv + [csv_file, "species", images, prefix], env=remote_env(addr), cwd=cwd)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_logs(project)}") from None
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["health"] == "SERVING"
    for kind in ("csv", "images"):
        assert summary["runs"][kind]["state"] == "RUN_STATE_SUCCEEDED", summary["runs"][kind]
        assert summary["runs"][kind]["dataset"] == summary["datasets"][kind]
    assert [p["label"] for p in summary["predictions"]["csv"]] == ["setosa"] * 3
    assert [p["label"] for p in summary["predictions"]["images"]] == ["0", "1"]


def test_python_cli_uploads_runs_by_name_and_predicts_on_the_compose_stack(compose_stack, tmp_path):
    _, addr = compose_stack
    env = remote_env(addr)
    cli = os.path.join(ROOT, ".venv", "bin", "cookline")
    csv_file, images = remote_data(tmp_path)
    flowers = run([cli, "upload", csv_file, "--name", "cli-flowers", "--label", "species"], env=env).stdout.strip()
    digits = run([cli, "upload", images, "--name", "cli-digits"], env=env).stdout.strip()
    assert flowers.startswith("cli-flowers@") and digits.startswith("cli-digits@")
    for name, dataset, ops in (
        ("cli-flowers-model", flowers, "[{standardize: {}}]"),
        ("cli-digits-model", digits, "[]"),
    ):
        pipeline = tmp_path / f"{name}.yaml"
        pipeline.write_text(
            f"name: {name}\ncollect: {{dataset: '{dataset}'}}\nprocess: {ops}\n"
            "train: {model: mlp, hidden_units: [16], epochs: 30, batch_size: 16, "
            "learning_rate: 0.01}\n"
        )
        record = json.loads(run([cli, "run", str(pipeline), "--output", "json"], env=env).stdout)
        assert record["state"] == "RUN_STATE_SUCCEEDED" and record["dataset"]["name"] == dataset.split("@")[0], record
    # a pipeline naming a host file: the gateway cannot see it, so `cookline run` uploads it first
    pipeline = tmp_path / "auto.yaml"
    pipeline.write_text(
        "name: cli-auto\ncollect: {source: flowers.csv, label: species}\n"
        "process: [{standardize: {}}]\ntrain: {model: mlp, epochs: 20, batch_size: 16}\n"
    )
    proc = run([cli, "run", str(pipeline), "--output", "json"], env=env)
    record = json.loads(proc.stdout)
    assert record["state"] == "RUN_STATE_SUCCEEDED" and record["pipeline"]["collect"]["dataset"] == flowers.replace(
        "cli-flowers", "cli-auto"
    ), record  # same file, same content version
    assert "NOT_FOUND" in proc.stderr and "uploading it" in proc.stderr
    head = tmp_path / "head.csv"
    head.write_text("".join(open(csv_file).readlines()[:4]))
    predicted = run([cli, "predict", "cli-flowers-model", "--input", str(head), "--output", "json"], env=env)
    assert [json.loads(line)["label"] for line in predicted.stdout.splitlines()] == ["setosa"] * 3


def test_sources_outside_the_mounted_examples_are_permission_denied_in_the_compose_stack(compose_stack):
    import grpc

    from cookline.client import Client

    _, addr = compose_stack
    link = os.path.join(ROOT, "examples", "data", ".compose-escape.csv")
    os.symlink("/etc/passwd", link)  # inside the containers this points at their /etc/passwd
    try:
        with Client(gateway=addr["gateway"]) as client:
            for source in ("../../../../etc/os-release", "/etc/passwd", "examples/data/.compose-escape.csv"):
                try:
                    client.submit(f"name: t\ncollect: {{source: '{source}', label: NAME}}\ntrain: {{model: mlp}}\n")
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.PERMISSION_DENIED, (source, exc.details())
                    assert (
                        exc.details().startswith("collect.source: ")
                        and "root:" not in exc.details()
                        and "PRETTY_NAME" not in exc.details()
                    ), exc.details()
                else:
                    raise AssertionError(f"{source} was accepted")
    finally:
        os.remove(link)
