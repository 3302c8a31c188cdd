"""Clients in other languages, as real programs against the five services on S3:
the Node.js client (`node --test`), the Go client (`go test`) and grpcurl through reflection.
Their raw-input suites get a text and an image model deployed (tests/support/raw_models.py)."""
import glob
import json
import os
import re

import pytest

import raw_models
from helpers import ROOT
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
    assert re.search(r"^\s*ok \d+ - a client carrying a token works against a stack that demands none$",
                     proc.stdout, re.M), proc.stdout
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
    health = run([tool("grpcurl"), "-plaintext", "-d", '{"service": "cookline.v1.PipelineService"}',
                  env["COOKLINE_GATEWAY_ADDR"], "grpc.health.v1.Health/Check"])
    assert json.loads(health.stdout) == {"status": "SERVING"}
    runs = run([tool("grpcurl"), "-plaintext", "-d", '{"limit": 5}',
                env["COOKLINE_GATEWAY_ADDR"], "cookline.v1.PipelineService/ListRuns"])
    assert isinstance(json.loads(runs.stdout), dict)
