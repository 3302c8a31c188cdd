"""Local sources stay inside the source roots (COOKLINE_SOURCE_ROOTS), on the local store: the
gateway's resolution of collect.source, and collect's own check before it opens anything.

An ingest of each escape runs against a real collect server (in this process, on a LocalStore);
the sources are files with a recognisable secret, so a message that quoted them would show it."""

from concurrent import futures

import grpc
import pytest

from cookline import config, spec
from cookline.spec import roots
from cookline.v1 import collect_pb2, collect_pb2_grpc, pipeline_pb2
from services.collect.service import CollectServicer
from services.common.server import add_servicer
from services.common.store import LocalStore

SECRET = "hunter2-do-not-show"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """root/ (the only source root) with data.csv and a folder; outside/ with a secret; the local
    store's folder inside the root; symlinks from inside to outside."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "images" / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "data.csv").write_text("x,y\n1,a\n2,b\n")
    (outside / "secret.csv").write_text(f"{SECRET},y\n1,a\n")
    (root / "link.csv").symlink_to(outside / "secret.csv")
    (root / "images" / "a" / "x.png").symlink_to(outside / "secret.csv")
    (root / "out").symlink_to(outside, target_is_directory=True)
    store = root / "store"
    (store / "cookline" / "datasets" / "other" / "v1").mkdir(parents=True)
    (store / "cookline" / "datasets" / "other" / "v1" / "shard-00000.npz").write_bytes(b"PK" + SECRET.encode())
    monkeypatch.setenv("COOKLINE_SOURCE_ROOTS", str(root))
    monkeypatch.setenv("COOKLINE_DATA_DIR", str(store))
    monkeypatch.chdir(root)
    return root, outside, store


def submit(source: str, base_dir: str = ""):
    """What the gateway does with a pipeline's collect.source at SubmitRun."""
    pipeline = spec.parse(
        f"name: t\ncollect: {{source: '{source}', label: y}}\ntrain: {{model: mlp}}\n", base_dir, config.source_roots()
    )
    roots.require(pipeline.collect.source)
    return pipeline


def denied(source: str, base_dir: str = "") -> str:
    with pytest.raises(spec.SourceDenied) as info:
        submit(source, base_dir)
    assert info.value.status == "PERMISSION_DENIED" and info.value.field == "collect.source"
    assert info.value.message.startswith("collect.source: ") and SECRET not in info.value.message
    return info.value.message


def test_sources_inside_the_root_resolve(tree):
    root, _, _ = tree
    assert submit("data.csv", str(root)).collect.source == str(root / "data.csv")


def test_each_escape_is_permission_denied_at_submit(tree):
    root, outside, store = tree
    assert "'..' component" in denied("../outside/secret.csv", str(root))
    assert "'..' component" in denied("images/../../outside/secret.csv", str(root))
    assert "outside the source roots" in denied(str(outside / "secret.csv"))
    assert "outside the source roots" in denied("/etc/passwd")
    assert "outside the source roots" in denied("link.csv", str(root))  # a symlink out
    assert "outside the source roots" in denied("out/secret.csv", str(root))  # a folder on the way
    assert "symlink leading outside" in denied("images", str(root))  # a file in a folder
    assert "object store's folder" in denied(str(store / "cookline" / "datasets" / "other" / "v1" / "shard-00000.npz"))


def test_a_base_dir_outside_the_roots_is_never_looked_at(tree):
    """A relative source under a base_dir outside the roots is passed over, existing or not: the
    answer (NOT_FOUND in the working directory) tells nothing about the other machine's files."""
    _, outside, _ = tree
    for name in ("secret.csv", "no-such.csv"):
        with pytest.raises(spec.SourceNotFound) as info:
            submit(name, str(outside))
        assert info.value.status == "NOT_FOUND" and str(outside) not in info.value.message


def test_a_missing_source_is_not_found_at_submit(tree):
    root, _, _ = tree
    with pytest.raises(spec.SourceNotFound) as info:
        submit("nope.csv", str(root))
    assert info.value.message.startswith("collect.source: ")


def test_offline_validation_resolves_without_roots(tree):
    """`cookline validate` on a client machine: no roots apply there."""
    _, outside, _ = tree
    pipeline = spec.parse("name: t\ncollect: {source: secret.csv, label: y}\ntrain: {model: mlp}\n", str(outside))
    assert pipeline.collect.source == str(outside / "secret.csv")


def test_proto3_json_names_are_accepted_in_pipeline_text(tree):
    pipeline = spec.parse(
        "name: t\ncollect: {source: data.csv, label: y, numericLabel: true}\n"
        "train: {model: mlp, hiddenUnits: [4], batchSize: 8}\n"
    )
    assert pipeline.collect.numeric_label and list(pipeline.train.hidden_units) == [4]
    assert pipeline.train.batch_size == 8


@pytest.fixture
def collect(tree):
    """A real collect server on the local store, in this process."""
    _, _, store = tree
    server = grpc.server(futures.ThreadPoolExecutor(4))
    add_servicer(
        server,
        collect_pb2.DESCRIPTOR.services_by_name["CollectService"],
        CollectServicer(LocalStore(str(store / "cookline"))),
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield collect_pb2_grpc.CollectServiceStub(channel)
    channel.close()
    server.stop(None)


def ingest(stub, source: str, fmt: str = "csv"):
    return list(
        stub.Ingest(
            collect_pb2.IngestRequest(
                dataset="t", source=pipeline_pb2.CollectSpec(source=source, format=fmt, label="y")
            ),
            timeout=30,
        )
    )


@pytest.mark.parametrize(
    "where, fmt, expected",
    [
        ("{root}/../outside/secret.csv", "csv", "'..' component"),
        ("{outside}/secret.csv", "csv", "outside the source roots"),
        ("{root}/link.csv", "csv", "outside the source roots"),
        ("{root}/out/secret.csv", "csv", "outside the source roots"),
        ("{root}/images", "image-folder", "symlink leading outside"),
        ("{store}/cookline/datasets/other/v1/shard-00000.npz", "npz", "object store's folder"),
    ],
)
def test_collect_refuses_each_escape_before_opening_it(tree, collect, where, fmt, expected):
    root, outside, store = tree
    with pytest.raises(grpc.RpcError) as info:
        ingest(collect, where.format(root=root, outside=outside, store=store), fmt)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, info.value.details()
    assert info.value.details().startswith("collect.source: ") and expected in info.value.details()
    assert SECRET not in info.value.details()


def test_collect_ingests_a_source_inside_the_root(tree, collect):
    root, _, _ = tree
    last = ingest(collect, str(root / "data.csv"))[-1]
    assert last.dataset.num_rows == 2
