"""Clients in other languages, as real programs against the five services on S3:
the Node.js client (`node --test`), the Go client (`go test`) and grpcurl through reflection.
Their raw-input suites get a text and an image model deployed (tests/support/raw_models.py)."""

import glob
import json
import os
import re

import pytest

import raw_models
from cookline.v1 import gateway_pb2
from helpers import ROOT, remote_data
from tools import run, tool

NODE_DIR = os.path.join(ROOT, "clients", "node")
GO_DIR = os.path.join(ROOT, "clients", "go")


@pytest.fixture(scope="module")
def client_env(stack, tmp_path_factory):
    """The stack's settings plus the raw-input models the client suites classify with."""
    _, env = stack
    return dict(env, **raw_models.deploy_for_clients(env, str(tmp_path_factory.mktemp("raw"))))


def test_node_client_suite_passes_against_the_stack(client_env):
    env = client_env
    suites = sorted(glob.glob(os.path.join(NODE_DIR, "test", "*.test.js")))
    assert suites, "no clients/node/test/*.test.js"
    proc = run([tool("node"), "--test", *suites], env=env, cwd=NODE_DIR)
    assert "# fail 0" in proc.stdout and "# pass 0" not in proc.stdout, proc.stdout
    # no token on this stack: a client carrying one still works (test_clients_secure.py
    # runs the same suite against a stack demanding a token over TLS)
    assert re.search(
        r"^\s*ok \d+ - a client carrying a token works against a stack that demands none$", proc.stdout, re.M
    ), proc.stdout
    example = r"^\s*ok \d+ - the example classifies a sentence and an image file$"
    assert re.search(example, proc.stdout, re.M), proc.stdout


def test_go_client_suite_passes_against_the_stack(client_env):
    env = client_env
    proc = run([tool("go"), "test", "-count=1", "-v", "./..."], env=env, cwd=GO_DIR)
    assert "--- PASS: TestStack " in proc.stdout and "FAIL" not in proc.stdout, proc.stdout
    assert "--- PASS: TestRawInputs/ExampleClassifiesASentenceAndAnImageFile " in proc.stdout, proc.stdout
    assert "--- PASS: TestSecureStack/ATokenWorksAgainstAStackThatDemandsNone " in proc.stdout, proc.stdout


def test_grpcurl_lists_the_gateway_services_through_reflection(stack):
    _, env = stack
    proc = run([tool("grpcurl"), "-plaintext", env["COOKLINE_GATEWAY_ADDR"], "list"])
    services = set(proc.stdout.split())
    assert {"cookline.v1.PipelineService", "grpc.health.v1.Health"} <= services, proc.stdout
    assert any(s.startswith("grpc.reflection.") for s in services), proc.stdout


def test_grpcurl_calls_health_and_an_rpc_through_reflection(stack):
    _, env = stack
    health = run(
        [
            tool("grpcurl"),
            "-plaintext",
            "-d",
            '{"service": "cookline.v1.PipelineService"}',
            env["COOKLINE_GATEWAY_ADDR"],
            "grpc.health.v1.Health/Check",
        ]
    )
    assert json.loads(health.stdout) == {"status": "SERVING"}
    runs = run(
        [
            tool("grpcurl"),
            "-plaintext",
            "-d",
            '{"limit": 5}',
            env["COOKLINE_GATEWAY_ADDR"],
            "cookline.v1.PipelineService/ListRuns",
        ]
    )
    assert isinstance(json.loads(runs.stdout), dict)


# --- remote use: upload, train by dataset name with a PipelineSpec message, predict ----------------


def check_remote_summary(stdout: str, prefix: str) -> None:
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["health"] == "SERVING"
    assert summary["datasets"]["csv"].startswith(f"{prefix}-csv@")
    assert summary["datasets"]["images"].startswith(f"{prefix}-images@")
    for kind in ("csv", "images"):
        assert summary["runs"][kind]["state"] == "RUN_STATE_SUCCEEDED", summary["runs"][kind]
        assert summary["runs"][kind]["dataset"] == summary["datasets"][kind]  # trained on the upload
    assert [p["label"] for p in summary["predictions"]["csv"]] == ["setosa"] * 3
    assert [p["label"] for p in summary["predictions"]["images"]] == ["0", "1"]


def test_node_remote_example_uploads_trains_by_name_and_predicts(stack, tmp_path):
    _, env = stack
    csv_file, images = remote_data(tmp_path)
    proc = run([tool("node"), "examples/remote.js", csv_file, "species", images, "node-remote"], env=env, cwd=NODE_DIR)
    check_remote_summary(proc.stdout, "node-remote")


def test_go_remote_example_uploads_trains_by_name_and_predicts(stack, tmp_path):
    _, env = stack
    csv_file, images = remote_data(tmp_path)
    proc = run([tool("go"), "run", "./cmd/remote", csv_file, "species", images, "go-remote"], env=env, cwd=GO_DIR)
    check_remote_summary(proc.stdout, "go-remote")


# --- reflection that generic tools can use ---------------------------------------------------


def test_grpcurl_describes_a_method_through_reflection(stack):
    _, env = stack
    for addr in (env["COOKLINE_SERVE_ADDR"], env["COOKLINE_GATEWAY_ADDR"]):
        proc = run([tool("grpcurl"), "-plaintext", addr, "describe", "cookline.v1.ServeService.Predict"])
        assert "rpc Predict ( .cookline.v1.PredictRequest ) returns ( .cookline.v1.PredictResponse )" in proc.stdout, (
            proc.stdout
        )


def test_ghz_load_tests_predict_through_reflection_on_serve_and_the_gateway(stack, client):
    import base64
    import struct

    run_record = client.submit(
        "name: ghz\ncollect: {source: examples/data/iris.csv, label: species}\ntrain: {model: linear, epochs: 1}\n",
        base_dir=ROOT,
    )
    list(client.watch(run_record.run_id))
    final = client.get_run(run_record.run_id)
    assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED, final.reason
    _, env = stack
    content = base64.b64encode(struct.pack("<4f", 5.1, 3.5, 1.4, 0.2)).decode()
    request = {
        "model": {"name": "ghz"},
        "inputs": {"features": {"dtype": "DATA_TYPE_FLOAT32", "shape": [1, 4], "content": content}},
    }
    for addr in (env["COOKLINE_SERVE_ADDR"], env["COOKLINE_GATEWAY_ADDR"]):
        proc = run(
            [
                tool("ghz"),
                "--insecure",
                "--call",
                "cookline.v1.ServeService/Predict",
                "-d",
                json.dumps(request),
                "-n",
                "40",
                "-c",
                "2",
                "--format",
                "json",
                addr,
            ]
        )
        report = json.loads(proc.stdout)
        assert report["count"] == 40 and report["statusCodeDistribution"] == {"OK": 40}, (
            addr,
            report.get("statusCodeDistribution"),
            report.get("errorDistribution"),
        )
