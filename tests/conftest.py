"""Shared pytest fixtures (a real S3 server on SeaweedFS, object stores, the data plane, the stack) and the
markers set by folder: tests/unit -> `unit`, tests/integration -> `integration`, tests/e2e -> `e2e`.

The fixtures start servers only when a test asks for them: tests/unit asks for none.
Helper modules live in tests/support, which is put on sys.path here (`from helpers import ROOT`)."""

from __future__ import annotations

import os
import sys

# Tests fork servers (SeaweedFS, with a pre-exec hook) while gRPC calls are in flight; gRPC's
# fork handlers would then abort the child before it execs. Set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
# Tests read sources from the checkout and from pytest's temporary folders: both are source roots
# (COOKLINE_SOURCE_ROOTS) of every service they start. tests/e2e/test_remote.py and
# tests/integration/test_source_roots.py narrow them.
os.environ.setdefault(
    "COOKLINE_SOURCE_ROOTS",
    os.pathsep.join((os.path.dirname(os.path.dirname(os.path.abspath(__file__))), __import__("tempfile").gettempdir())),
)

_TESTS = os.path.dirname(os.path.abspath(__file__))
_SUPPORT = os.path.join(_TESTS, "support")
try:  # the project is normally installed editable; fall back to the checkout
    import services  # noqa: F401 (only probes that the project is importable)
except ImportError:
    sys.path.insert(0, os.path.dirname(_TESTS))
if _SUPPORT not in sys.path:
    sys.path.insert(0, _SUPPORT)

import pytest

from dataplane import start_data_plane
from helpers import IRIS_YAML, stack_env, unique_bucket
from s3server import SeaweedS3
from services.common.store import LocalStore, S3Store

KINDS = {
    "unit": "in-process code only: starts no server process",
    "integration": "real processes, a real S3 server (SeaweedFS) or an in-process gRPC server; not the whole stack",
    "e2e": "the five services as real processes, clients in other languages, containers",
}


@pytest.fixture(scope="session")
def s3_server():
    """One running `weed mini` S3 server for the whole session (never skipped)."""
    with SeaweedS3() as server:
        yield server


@pytest.fixture
def s3_store(s3_server):
    """An S3Store on a fresh bucket of the session's server."""
    store = S3Store(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, unique_bucket())
    yield store
    try:  # keep the server's disk small; the whole data dir goes at session end anyway
        store.delete_prefix("")
    except Exception:
        pass


@pytest.fixture
def local_store(tmp_path):
    """A LocalStore rooted in the test's tmp_path."""
    return LocalStore(str(tmp_path / "store"))


def pytest_collection_modifyitems(items):
    """Marks each test by the folder it is in (tests/unit, tests/integration, tests/e2e)."""
    for item in items:
        kind = os.path.relpath(str(item.path), _TESTS).split(os.sep)[0]
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))


def pytest_configure(config):
    for kind, meaning in KINDS.items():
        config.addinivalue_line("markers", f"{kind}: {meaning}")
    config.addinivalue_line("markers", "soak: the chaos soak (bench/soak.py --minutes 3), tests/e2e/test_soak.py")


@pytest.fixture(scope="module")
def stack(s3_server, tmp_path_factory, request):
    """The five services as separate OS processes on free ports, on the S3 backend (SeaweedFS).

    Yields (Stack, env): env holds every address and the S3 settings, for
    clients and for CLI subprocesses. A test module may set STACK_ENV (a dict, or
    a function of tmp_path_factory returning one) to add settings, e.g. an auth token.
    """
    from cookline.stack import Stack

    env = stack_env(os.environ, s3_server.env(unique_bucket("e2e")), s3_server.ports.values())
    extra = getattr(request.module, "STACK_ENV", {})  # a test module's extra settings,
    env.update(extra(tmp_path_factory) if callable(extra) else extra)  # or a function making them
    log_dir = str(tmp_path_factory.mktemp("logs"))
    with Stack(env, log_dir=log_dir) as running:
        running.start_all()
        running.wait_healthy(timeout=180)
        yield running, env


@pytest.fixture(scope="module")
def data_plane(s3_server, tmp_path_factory):
    """collect and process only (real processes, S3, ~50 KB shards). Yields (Stack, env) like `stack`.

    Starts in a second or two: neither service imports TensorFlow.
    """
    running, env = start_data_plane(s3_server, str(tmp_path_factory.mktemp("logs")))
    with running:
        yield running, env


@pytest.fixture(scope="module")
def env(stack):
    """The `stack`'s environment: addresses, S3 settings, a module's STACK_ENV."""
    return stack[1]


@pytest.fixture(scope="module")
def iris(env):
    """The iris model trained through the gateway (examples/iris.yaml) on the module's stack,
    deployed by the run: its ModelRef."""
    from cookline.client import Client

    with Client(env=env) as client:
        run, _ = client.run_file_and_wait(IRIS_YAML)
    assert run.reason == ""
    return run.model


@pytest.fixture(scope="module")
def client(env):
    """A cookline Client of the module's stack."""
    from cookline.client import Client

    with Client(env=env) as c:
        yield c


@pytest.fixture(scope="module")
def store(env):
    """The object store the module's stack uses (S3 on SeaweedFS)."""
    from services.common.store import store_from_env

    return store_from_env(env)
