"""The thin Python client (package `cookline`) never imports TensorFlow, and the CLI's client side uses it."""

import json
import subprocess
import sys

CLIENT_MODULES = [
    "cookline",
    "cookline.config",
    "cookline.channels",
    "cookline.tensors",
    "cookline.client",
    "cookline.cli",
    "cookline.stack",
    "cookline.v1.gateway_pb2_grpc",
    "cookline.v1.serve_pb2_grpc",
]

# In a fresh interpreter, so nothing imported by the test session itself can hide an import.
PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))))
"""


def test_importing_the_client_and_cli_does_not_import_tensorflow():
    proc = subprocess.run([sys.executable, "-c", PROBE, *CLIENT_MODULES], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == []


def test_the_probe_does_see_tensorflow_when_a_service_imports_it():
    """Guards the test above: the same probe reports TensorFlow once a service module loads it."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "services.train.models"], capture_output=True, text=True, check=True
    )
    assert "tensorflow" in json.loads(proc.stdout)


def test_the_cli_submits_and_predicts_through_the_thin_client():
    from cookline import cli
    from cookline.client import Client

    assert cli.Client is Client


def test_the_cli_prints_texts_with_brackets_as_they_are(tmp_path):
    """Errors, paths and server messages are text, not rich markup: "[red]" in a path stays."""
    missing = tmp_path / "[red]pipeline[/red].yaml"
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from cookline.cli import main; sys.exit(main())", "run", str(missing)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert f"cannot read {missing}" in proc.stderr, proc.stderr
