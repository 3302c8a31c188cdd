"""A client whose files the services cannot see: uploads (Python client and `cookline upload`),
training on a stored dataset by name (`collect.dataset`), pipelines sent as PipelineSpec messages,
`cookline run` uploading a local source by itself, and the source roots that keep local sources
inside what the operator allows (COOKLINE_SOURCE_ROOTS).

The stack's source roots here are examples/ and one temporary folder: every file a test writes to its tmp_path is, for
the services, somewhere they must not read, as a client's disk on another machine would be."""

import json
import os
import shutil

import grpc
import pytest

from cookline.v1 import collect_pb2, gateway_pb2, pipeline_pb2
from helpers import ROOT
from tools import run

EXAMPLES = os.path.join(ROOT, "examples")
IRIS_CSV = os.path.join(EXAMPLES, "data", "iris.csv")
DIGITS = os.path.join(EXAMPLES, "data", "digits")
CLI = os.path.join(ROOT, ".venv", "bin", "cookline")


def allowed_folder(tmp_path_factory):
    """A second source root, in pytest's temporary folder."""
    folder = tmp_path_factory.getbasetemp() / "allowed-root"
    folder.mkdir(exist_ok=True)
    return folder


def STACK_ENV(tmp_path_factory):  # the conftest's name for a module's stack settings
    return {"COOKLINE_SOURCE_ROOTS": os.pathsep.join((EXAMPLES, str(allowed_folder(tmp_path_factory))))}


TINY_TRAIN = "train: {model: mlp, hidden_units: [8], epochs: 2, batch_size: 16}\n"


def finish(client, run_record) -> gateway_pb2.Run:
    events = list(client.watch(run_record.run_id))
    final = client.get_run(run_record.run_id)
    return final, events


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


@pytest.fixture(scope="module")
def client_files(tmp_path_factory):
    """A CSV and a small image folder on the 'client's disk' (outside the stack's source roots)."""
    folder = tmp_path_factory.mktemp("client")
    shutil.copy(IRIS_CSV, folder / "iris.csv")
    for digit in ("0", "1"):
        (folder / "digits" / digit).mkdir(parents=True)
        for name in sorted(os.listdir(os.path.join(DIGITS, digit)))[:12]:
            shutil.copy(os.path.join(DIGITS, digit, name), folder / "digits" / digit / name)
    return folder


@pytest.fixture(scope="module")
def uploaded(client, client_files):
    """iris.csv uploaded by the Python client as dataset `iris-remote`."""
    seen = []
    info = client.upload(
        str(client_files / "iris.csv"),
        "iris-remote",
        pipeline_pb2.CollectSpec(label="species"),
        progress=lambda sent, total: seen.append((sent, total)),
    )
    return info, seen


def test_upload_publishes_the_same_version_as_an_ingest_of_the_same_file(client, uploaded):
    info, seen = uploaded
    assert info.ref.name == "iris-remote" and info.num_rows == 150 and info.format == "csv"
    assert [f.name for f in info.fields] == ["features", "label"]
    assert list(info.fields[0].columns) == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert seen[-1][0] == seen[-1][1] == os.path.getsize(IRIS_CSV)
    # iris.csv is inside the roots: a run ingesting it gets the same content-addressed version
    ingest = client.submit(f"name: iris-remote\ncollect: {{source: {IRIS_CSV}, label: species}}\n" + TINY_TRAIN)
    final, _ = finish(client, ingest)
    assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED, final.reason
    assert final.dataset.version == info.ref.version


def test_a_run_trains_on_a_stored_dataset_by_name_without_ingesting(client, uploaded):
    info, _ = uploaded
    for value in (info.ref.name, f"{info.ref.name}@{info.ref.version}"):
        record = client.submit(
            f"name: iris-stored\ncollect: {{dataset: {value}}}\nsplit: {{validation: 0.2}}\n" + TINY_TRAIN
        )
        assert record.pipeline.collect.dataset == f"{info.ref.name}@{info.ref.version}"  # pinned at submit
        final, events = finish(client, record)
        assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED, final.reason
        assert final.dataset == info.ref
        assert not [e for e in events if e.WhichOneof("event") == "ingest"]  # nothing re-ingested
        assert any("not re-ingested" in e.stage.message for e in events if e.WhichOneof("event") == "stage")
        # one deploy policy after a run: the trained version, pinned (a later, gated-out version never
        # replaces it on a serve restart)
        meta = client.model_metadata("iris-stored")
        assert meta.model.version == final.model.version and meta.version_policy == "version"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("no-such-data", "collect.dataset: dataset 'no-such-data' is not in the store"),
        ("iris-remote@0123456789abcdef", "collect.dataset: version '0123456789abcdef' of dataset 'iris-remote'"),
    ],
)
def test_an_unknown_stored_dataset_is_not_found_naming_the_field(client, uploaded, value, expected):
    err = rpc_error(client.submit, f"name: t\ncollect: {{dataset: '{value}'}}\n" + TINY_TRAIN)
    assert err.code() == grpc.StatusCode.NOT_FOUND and expected in err.details(), err.details()


def test_collect_dataset_takes_no_source_or_format_options(client):
    err = rpc_error(client.submit, "name: t\ncollect: {dataset: iris-remote, label: species}\n" + TINY_TRAIN)
    assert (
        err.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "collect.label: not allowed with collect.dataset" in err.details()
    )


def test_a_pipeline_sent_as_a_message_runs_like_its_text(client, uploaded):
    info, _ = uploaded
    spec = pipeline_pb2.PipelineSpec(
        name="iris-message",
        collect=pipeline_pb2.CollectSpec(dataset=info.ref.name),
        train=pipeline_pb2.TrainSpec(model="mlp", epochs=2, batch_size=16),
    )
    spec.process.add().standardize.SetInParent()
    final, _ = finish(client, client.submit_spec(spec))
    assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED, final.reason
    assert final.pipeline.train.learning_rate == pytest.approx(0.001)  # defaults filled in as for text
    bad = pipeline_pb2.PipelineSpec(name="Bad Name", collect=spec.collect, train=spec.train)
    err = rpc_error(client.submit_spec, bad)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "name" in err.details()
    err = rpc_error(client.pipelines.SubmitRun, gateway_pb2.SubmitRunRequest(), timeout=30)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("pipeline: required")


def test_cli_upload_of_an_image_folder_prints_its_version(env, client, client_files):
    proc = run(
        [
            CLI,
            "upload",
            str(client_files / "digits"),
            "--name",
            "digits-remote",
            "--gateway",
            env["COOKLINE_GATEWAY_ADDR"],
        ],
        env=env,
    )
    name, version = proc.stdout.strip().split("@")
    info = client.get_dataset(name, version)
    assert info.num_rows == 24 and info.format == "image-folder" and list(info.fields[1].class_names) == ["0", "1"]
    again = run([CLI, "upload", str(client_files / "digits"), "--name", "digits-remote"], env=env)
    assert again.stdout.strip() == proc.stdout.strip()  # same files, same version


def test_cli_run_uploads_a_source_the_services_cannot_read(env, client_files):
    pipeline = client_files / "pipeline.yaml"
    pipeline.write_text(
        "name: iris-cli\ncollect: {source: iris.csv, label: species}\nprocess: [{standardize: {}}]\n" + TINY_TRAIN
    )
    proc = run([CLI, "run", str(pipeline), "--output", "json"], env=env)
    record = json.loads(proc.stdout)
    assert record["state"] == "RUN_STATE_SUCCEEDED", record
    assert record["pipeline"]["collect"]["dataset"].startswith("iris-cli@")
    assert "uploading it" in proc.stderr
    never = run_status([CLI, "run", str(pipeline), "--upload", "never"], env)
    assert never.returncode == 2 and "NOT_FOUND: collect.source" in never.stderr, never.stderr


def run_status(argv, env):
    import subprocess

    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


# --- source roots ------------------------------------------------------------------


@pytest.fixture(scope="module")
def escapes(tmp_path_factory):
    """Paths that leave examples/ in each way: '..', absolute, a symlink file, a symlink in a folder."""
    inside = str(allowed_folder(tmp_path_factory))
    links = tmp_path_factory.mktemp("links")
    secret = links / "secret.csv"
    secret.write_text("password,label\nhunter2,a\n")
    link = os.path.join(inside, ".escape-link.csv")
    folder = os.path.join(inside, ".escape-folder")
    os.makedirs(os.path.join(folder, "a"), exist_ok=True)
    for path, target in ((link, secret), (os.path.join(folder, "a", "x.png"), secret)):
        if os.path.lexists(path):
            os.remove(path)
        os.symlink(target, path)
    return {"dotdot": "../../../../etc/os-release", "absolute": "/etc/passwd", "symlink": link, "folder": folder}


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "folder"])
def test_sources_outside_the_roots_are_permission_denied_at_submit(client, escapes, kind):
    fmt = "image-folder" if kind == "folder" else "csv"
    err = rpc_error(
        client.submit,
        f"name: t\ncollect: {{source: '{escapes[kind]}', format: {fmt}, label: NAME}}\n" + TINY_TRAIN,
        base_dir=os.path.join(EXAMPLES, "data"),
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and err.details().startswith("collect.source: "), (
        err.details()
    )
    assert "hunter2" not in err.details() and "Debian" not in err.details() and "root:" not in err.details()


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "folder"])
def test_collect_refuses_sources_outside_the_roots_before_opening_them(env, escapes, kind):
    from cookline import channels
    from cookline.v1 import collect_pb2_grpc

    stub = collect_pb2_grpc.CollectServiceStub(channels.channel("collect", env))
    path = escapes[kind] if kind != "dotdot" else os.path.join(EXAMPLES, escapes[kind])
    fmt = "image-folder" if kind == "folder" else "csv"
    err = rpc_error(
        lambda: list(
            stub.Ingest(
                collect_pb2.IngestRequest(
                    dataset="escape", source=pipeline_pb2.CollectSpec(source=path, format=fmt, label="NAME")
                ),
                timeout=30,
            )
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and err.details().startswith("collect.source: "), (
        err.details()
    )
    assert "hunter2" not in err.details() and "PRETTY_NAME" not in err.details()


def test_cli_upload_of_a_text_csv_and_an_npz(env, client, tmp_path):
    import numpy as np

    text = run(
        [CLI, "upload", os.path.join(EXAMPLES, "data", "text.csv"), "--name", "text-remote", "--format", "text-csv"],
        env=env,
    ).stdout.strip()
    info = client.get_dataset(*text.split("@"))
    assert info.format == "text-csv" and {f.name for f in info.fields} == {"text", "label"}
    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, x=np.arange(60, dtype=np.float32).reshape(20, 3), label=np.array(["a", "b"] * 10))
    npz = run([CLI, "upload", str(arrays), "--name", "npz-remote"], env=env).stdout.strip()
    info = client.get_dataset(*npz.split("@"))
    assert info.format == "npz" and info.num_rows == 20 and {f.name for f in info.fields} == {"x", "label"}
