"""Locating the external tools the client and deploy tests drive (node, go, grpcurl, ...).

A missing tool is a failing test, never a skip: `make tools` installs them all.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from helpers import ROOT

GO_BIN = os.path.join(ROOT, ".cache", "go-bin")  # where `make tools` puts `go install`ed binaries


def tool(name: str) -> str:
    """Absolute path of `name`: .cache/go-bin first, then the venv's bin, then PATH. Fails if missing."""
    for folder in (GO_BIN, os.path.join(ROOT, ".venv", "bin")):
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    assert found, f"{name} not found in .cache/go-bin, .venv/bin or on PATH: run `make tools`"
    return found


def run(argv: list[str], env: dict | None = None, cwd: str = ROOT, timeout: float = 900) -> subprocess.CompletedProcess:
    """Runs a tool to completion, capturing its output; asserts exit code 0 and shows the output if not."""
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(argv)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc


def published_model(store, name: str, version: int, dest: str):
    """(raw inputs -> numpy outputs, cookline.json) of a published model version: its
    serving_default, loaded with tf.saved_model.load alone from a copy of its files."""
    import json

    import tensorflow as tf

    prefix = f"models/{name}/{version}/"
    for key in store.list(prefix):
        store.get_file(key, os.path.join(dest, key[len(prefix) :]))
    with open(os.path.join(dest, "cookline.json")) as f:
        meta = json.load(f)
    loaded = tf.saved_model.load(dest)

    def answer(_loaded=loaded, **inputs):  # _loaded keeps the variables alive
        out = _loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out.items()}

    return answer, meta


def podman(args: list[str], check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """`podman ARGS` with the repository's deploy/containers.conf (as `make` runs it); asserts
    exit code 0 unless `check` is False."""
    env = dict(os.environ, CONTAINERS_CONF=os.path.join(ROOT, "deploy", "containers.conf"))
    if check:
        return run([tool("podman"), *args], env=env, timeout=timeout)
    return subprocess.run([tool("podman"), *args], env=env, capture_output=True, text=True, timeout=timeout)
