"""Plugins through the real stack: the example package (examples/plugins) is pip-installed into a
directory of its own, put on the services' PYTHONPATH only (this test process and the rest of
the suite never see it), and a pipeline using its source, op and model family runs and predicts."""

import os
import shutil
import subprocess
import sys

import grpc
import numpy as np
import pytest

from cookline import channels
from cookline.config import address
from cookline.stack import Stack
from cookline.v1 import gateway_pb2, gateway_pb2_grpc, plugins_pb2, plugins_pb2_grpc
from helpers import EXAMPLES, free_ports

PACKAGE = os.path.join(EXAMPLES, "plugins")
PIPELINE = os.path.join(PACKAGE, "iris-jsonl.yaml")
EXPECTED = {("source", "jsonl"), ("op", "clip"), ("model", "residual_mlp")}
SERVICES = ("gateway", "collect", "process", "train", "serve")


def install(tmp_path_factory) -> dict:
    """pip-installs the example package into a fresh directory (a copy is built, so the checkout
    stays clean); the stack's services get it on PYTHONPATH."""
    work = tmp_path_factory.mktemp("plugins")
    shutil.copytree(PACKAGE, work / "src", ignore=shutil.ignore_patterns("data", "*.yaml"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(work / "site"),
            str(work / "src"),
        ],
        check=True,
    )
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(work / "site"), os.environ.get("PYTHONPATH")) if p)}


STACK_ENV = install  # the conftest `stack` fixture adds these settings


def list_plugins(env, service):
    with channels.channel(service, env) as channel:
        return plugins_pb2_grpc.PluginServiceStub(channel).ListPlugins(plugins_pb2.ListPluginsRequest(), timeout=30)


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_reports_the_plugins_it_loaded(env, service):
    response = list_plugins(env, service)
    assert response.service == service
    assert {(p.kind, p.name) for p in response.plugins} == EXPECTED
    assert all(
        p.distribution == "cookline-example-plugins" and p.version == "0.1.0" and not p.error for p in response.plugins
    )
    assert next(p for p in response.plugins if p.name == "clip").params == ["lo", "hi"]


def test_health_verbose_lists_each_services_plugins(env):
    done = subprocess.run(
        [sys.executable, "-m", "cookline.cli", "health", "--verbose"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for kind, name in EXPECTED:
        assert done.stderr.count(f"plugin {kind} {name} (cookline-example-plugins 0.1.0) params:") == len(SERVICES)


def test_cookline_validate_knows_the_plugins_where_they_are_installed(env):
    done = subprocess.run(
        [sys.executable, "-m", "cookline.cli", "validate", PIPELINE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "process  standardize, clip, shuffle" in done.stdout and "residual_mlp, 40 epochs" in done.stdout


@pytest.fixture(scope="module")
def plugin_run(client):
    run = client.submit_file(PIPELINE)
    list(client.watch(run.run_id))
    return client.get_run(run.run_id)


def test_a_pipeline_of_plugin_source_op_and_model_trains_and_predicts(client, plugin_run):
    assert plugin_run.state == gateway_pb2.RUN_STATE_SUCCEEDED, plugin_run.reason
    assert plugin_run.pipeline.train.model == "residual_mlp"
    assert dict(plugin_run.pipeline.train.params) == {"width": 16.0, "blocks": 2.0, "dropout": 0.0}
    assert plugin_run.metrics["val_accuracy"] >= 0.8
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    results = client.predict("iris-jsonl", rows)
    assert [r["label"] for r in results][:2] == ["setosa", "virginica"]


def test_the_exported_model_has_the_plugin_ops_serving_form(client, plugin_run):
    """clip sits after standardize in the served graph: past the clip bound, a feature's size no
    longer changes the answer (without the op in the graph, a petal length of 50 vs 500 would)."""
    big, bigger = client.predict("iris-jsonl", [[5.9, 3.0, 50.0, 1.5], [5.9, 3.0, 500.0, 1.5]])
    assert big["label"] == bigger["label"]
    np.testing.assert_allclose(list(big["scores"].values()), list(bigger["scores"].values()), rtol=1e-6)


def test_bad_plugin_parameters_are_invalid_argument_before_anything_runs(client):
    with open(PIPELINE) as f:
        text = f.read().replace("clip: {lo: -2.5, hi: 2.5}", "clip: {lo: 1, hi: 0}")
    with pytest.raises(grpc.RpcError) as info:
        client.submit(text, base_dir=PACKAGE)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "process[1].clip.hi: 0.0 is not above lo (1.0)" in info.value.details()


def test_a_service_lacking_a_plugin_is_named_in_failed_precondition(env, s3_server, tmp_path):
    """A second gateway (with the plugins) whose collect lacks them: the run is refused up front."""
    ports = free_ports(3, set(s3_server.ports.values()))
    bare = {k: v for k, v in env.items() if k != "PYTHONPATH"} | {"COOKLINE_COLLECT_ADDR": f"127.0.0.1:{ports[0]}"}
    gateway_env = env | {
        "COOKLINE_COLLECT_ADDR": bare["COOKLINE_COLLECT_ADDR"],
        "COOKLINE_GATEWAY_ADDR": f"127.0.0.1:{ports[1]}",
        "COOKLINE_GATEWAY_HTTP_ADDR": f"127.0.0.1:{ports[2]}",
    }  # the stack's gateway has its own
    with Stack(bare, log_dir=str(tmp_path)) as collect, Stack(gateway_env, log_dir=str(tmp_path)) as gateway:
        collect.start("collect")
        gateway.start("gateway")
        collect.wait_healthy(timeout=120)
        gateway.wait_healthy(timeout=120)
        assert list_plugins(bare, "collect").plugins == []
        with open(PIPELINE) as f, grpc.insecure_channel(address("gateway", gateway_env)) as channel:
            with pytest.raises(grpc.RpcError) as info:
                gateway_pb2_grpc.PipelineServiceStub(channel).SubmitRun(
                    gateway_pb2.SubmitRunRequest(pipeline=f.read(), base_dir=PACKAGE), timeout=60
                )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "the collect service lacks the source plugin 'jsonl'" in info.value.details()
