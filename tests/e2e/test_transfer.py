"""Transfer learning on the live stack: train.base from the registry, frozen layers and a second
fine-tuning phase; the gain over training from scratch is measured, not assumed; lineage records the
base, and the registry keeps a base from being deleted unless forced."""

import subprocess
import sys

import grpc
import pytest
from shape_images import write_folder

from cookline.v1 import gateway_pb2, registry_pb2
from helpers import iris_pipeline
from services.common import layout

# The base: a cnn on three shapes, 400 images each. The new task: two shapes the base never saw,
# 40 training images each, 100 held-out images each (the image folder's test/ split).
BASE = (
    "name: shapes-base\ncollect: {{source: {src}, format: image-folder}}\ntrain: {{model: cnn, epochs: 12, seed: 0}}\n"
)
NEW = "name: {name}\ncollect: {{source: {src}, format: image-folder}}\ntrain: {train}\n"
# The fine-tuned run: the base's convolutions stay frozen (its first 6 layers: rescaling, two
# convolutions with their pooling, flatten), its dense layer and a new output train for 15 epochs,
# then everything trains 5 more epochs at a tenth of the learning rate. From scratch: the same
# architecture, 20 epochs.
FINE_TUNED = "{model: cnn, base: shapes-base@production, freeze: 6, epochs: 15, fine_tune: {epochs: 5}, seed: 0}"
SCRATCH = "{model: cnn, epochs: 20, seed: 0}"


def _succeeded(client, text: str) -> gateway_pb2.Run:
    run = client.run_and_wait(text)[0]
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    return run


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    base = write_folder(str(root / "base"), {"circle": 400, "square": 400, "triangle": 400}, seed=1)
    new = str(root / "new")
    write_folder(f"{new}/train", {"ellipse": 40, "diamond": 40}, seed=2)
    write_folder(f"{new}/test", {"ellipse": 100, "diamond": 100}, seed=3)
    return base, new


def test_fine_tuning_beats_training_from_scratch(client, env, store, shapes):
    base_folder, new_folder = shapes
    _succeeded(client, BASE.format(src=base_folder))
    client.registry.SetAlias(registry_pb2.SetAliasRequest(name="shapes-base", alias="production", version=1))

    tuned = _succeeded(client, NEW.format(name="shapes-tuned", src=new_folder, train=FINE_TUNED))
    scratch = _succeeded(client, NEW.format(name="shapes-scratch", src=new_folder, train=SCRATCH))
    tuned_accuracy = tuned.evaluation.metrics["accuracy"]
    scratch_accuracy = scratch.evaluation.metrics["accuracy"]
    print(
        f"\nheld-out accuracy on 2 new classes from 80 training images ({tuned.evaluation.rows} held-out rows): "
        f"fine-tuned from shapes-base {tuned_accuracy:.3f}, same cnn from scratch {scratch_accuracy:.3f}"
    )
    assert tuned.evaluation.rows == scratch.evaluation.rows == 200  # the test/ folder
    assert tuned_accuracy >= 0.9
    assert tuned_accuracy > scratch_accuracy

    # The gateway pinned the alias to the version it named, and lineage records the base.
    assert tuned.pipeline.train.base == "shapes-base:1"
    base = layout.read_model_record(store, "shapes-tuned", 1).base
    assert (base.model, base.version) == ("shapes-base", 1)
    assert base.uri == f"s3://{env['COOKLINE_BUCKET']}/models/shapes-base/1/"
    assert not layout.read_model_record(store, "shapes-scratch", 1).HasField("base")
    version = client.registry.GetModel(registry_pb2.GetModelRequest(name="shapes-tuned")).model.versions[0]
    assert version.lineage.base == base  # the registry shows it
    # Both phases ran: progress counted 20 epochs.
    events = list(client.watch(tuned.run_id))
    progress = [e.train for e in events if e.HasField("train") and e.train.epoch_finished]
    assert [p.epoch for p in progress] == list(range(1, 21)) and {p.epochs for p in progress} == {20}

    # A fine-tuned model exports like any other: raw PNG bytes in, a label out.
    with open(f"{new_folder}/test/diamond/0000.png", "rb") as f:
        [result] = client.predict("shapes-tuned", {"image": [f.read()]})
    assert result["label"] in ("diamond", "ellipse")


def test_a_base_is_kept_from_deletion_unless_forced(client, env, store, tmp_path):
    # A base that is neither deployed (its gate needs held-out rows it has none of) nor aliased.
    gate = "{deploy_if_at_least: 0.5}"
    _succeeded(client, iris_pipeline("iris-base", train="{model: mlp, epochs: 2}", evaluate=gate))
    _succeeded(client, iris_pipeline("iris-tuned", train="{model: mlp, base: 'iris-base:1', epochs: 2}"))

    # The same network as a .keras file: a local path (inside the source roots) and an s3:// URI.
    network = store.get_bytes(layout.model_prefix("iris-base", 1) + "network.keras")
    local = tmp_path / "iris-base.keras"
    local.write_bytes(network)
    store.put_bytes("nets/iris-base.keras", network)
    for name, base in (("iris-file", str(local)), ("iris-s3", f"s3://{env['COOKLINE_BUCKET']}/nets/iris-base.keras")):
        _succeeded(client, iris_pipeline(name, train=f"{{model: mlp, base: '{base}', freeze: 1, epochs: 2}}"))
        lineage = layout.read_model_record(store, name, 1).base
        assert (lineage.model, lineage.version, lineage.uri) == ("", 0, base)

    request = registry_pb2.DeleteModelVersionRequest(name="iris-base", version=1)
    with pytest.raises(grpc.RpcError) as info:
        client.registry.DeleteModelVersion(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "iris-tuned:1" in info.value.details() and "force" in info.value.details()
    assert [v.version for v in client.registry.GetModel(registry_pb2.GetModelRequest(name="iris-base")).model.versions]

    # The CLI: refused the same way, then forced.
    cli = [sys.executable, "-m", "cookline.cli", "delete-model", "iris-base", "1"]
    refused = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "FAILED_PRECONDITION" in refused.stderr and "iris-tuned:1" in refused.stderr
    forced = subprocess.run([*cli, "--force"], env=env, capture_output=True, text=True, timeout=120)
    assert forced.returncode == 0, forced.stderr
    assert "versions left: none" in forced.stderr
    with pytest.raises(grpc.RpcError) as info:
        client.registry.GetModel(registry_pb2.GetModelRequest(name="iris-base"), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # The dependent model still serves.
    assert client.predict("iris-tuned", {"features": [[5.1, 3.5, 1.4, 0.2]]})[0]["label"]
