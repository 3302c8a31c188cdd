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
from helpers import ROOT, free_ports
from tools import run, tool

# On a fresh machine the first image build (debootstrap, pip installing TensorFlow) takes minutes.
pytestmark = pytest.mark.timeout(1800)

SERVICES = ("gateway", "collect", "process", "train", "serve")


@pytest.fixture(scope="module")
def compose_stack():
    """The compose stack on free host ports under a unique project name; brought down afterwards."""
    project = "cookline-e2e-" + secrets.token_hex(4)
    ports = dict(zip(SERVICES + ("minio", "serve_http", "gateway_http"), free_ports(8, set())))
    env = dict(os.environ, COOKLINE_PUBLISH_HOST="127.0.0.1", MINIO_PORT=str(ports["minio"]),
               MINIO_ROOT_USER="cookline-e2e", MINIO_ROOT_PASSWORD=secrets.token_urlsafe(18))
    env.update({f"COOKLINE_{s.upper()}_PORT": str(ports[s]) for s in SERVICES + ("serve_http", "gateway_http")})
    make = [tool("make"), "--no-print-directory", f"COMPOSE_PROJECT={project}"]
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
    env = dict(os.environ, CONTAINERS_CONF=os.path.join(ROOT, "deploy", "containers.conf"))
    out = []
    for service in ("minio",) + SERVICES:
        proc = subprocess.run([tool("podman"), "logs", "--tail", "30", f"{project}_{service}_1"],
                              env=env, capture_output=True, text=True)
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
    proc = run([os.path.join(ROOT, ".venv", "bin", "cookline"), "run", "examples/iris.yaml", "--output", "json",
                "--gateway", addr["gateway"]])
    record = json.loads(proc.stdout)
    assert record["state"] == "RUN_STATE_SUCCEEDED" and record["metrics"]["val_accuracy"] >= 0.9


def test_every_container_passes_its_grpc_healthcheck(compose_stack):
    project, _ = compose_stack
    env = dict(os.environ, CONTAINERS_CONF=os.path.join(ROOT, "deploy", "containers.conf"))
    for service in SERVICES:
        run([tool("podman"), "healthcheck", "run", f"{project}_{service}_1"], env=env)


def test_serve_rest_is_published(compose_stack):
    """Serve's OIP v2 REST port (COOKLINE_SERVE_HTTP_ADDR) is reachable from outside, like the gRPC ports."""
    _, addr = compose_stack
    env = {"COOKLINE_SERVE_HTTP_ADDR": addr["serve_http"]}
    status, _, body = http_call(env, "serve", "GET", "/v2/health/live")
    assert status == 200 and json.loads(body) == {"live": True}
    status, _, body = http_call(env, "serve", "GET", "/v2")
    assert status == 200 and json.loads(body)["name"] == "cookline"
