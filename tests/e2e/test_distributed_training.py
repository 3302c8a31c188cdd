"""train.workers: 2 on the live stack: the chief (the stack's train service) and a second train
replica, listed in COOKLINE_TRAIN_PEERS, train together; the run publishes what a single-worker
run of the same pipeline publishes, and its record says how many workers trained."""

import json

import pytest

from cookline.stack import Stack
from cookline.v1 import gateway_pb2
from helpers import iris_pipeline, train_peer_ports


def STACK_ENV(_factory):
    chief, peer = train_peer_ports(2)
    return {"COOKLINE_TRAIN_ADDR": f"127.0.0.1:{chief}", "COOKLINE_TRAIN_PEERS": f"127.0.0.1:{chief},127.0.0.1:{peer}"}


@pytest.fixture(scope="module")
def peer(stack, tmp_path_factory):
    """The second train replica: the same service on its own port."""
    env = dict(stack[1])
    env["COOKLINE_TRAIN_ADDR"] = env["COOKLINE_TRAIN_PEERS"].split(",")[1]
    with Stack(env, log_dir=str(tmp_path_factory.mktemp("peer-logs"))) as second:
        second.start("train")
        second.wait_healthy(timeout=180)
        yield second


def _pipeline(name: str, workers: int, batch_size: int = 10) -> str:
    return iris_pipeline(
        name,
        split="{validation: 0.2, seed: 7}",
        train=f"{{model: mlp, epochs: 3, batch_size: {batch_size}, workers: {workers}}}",
    )


def test_two_workers_publish_what_one_worker_publishes(client, store, peer):
    single, _ = client.run_and_wait(_pipeline("single", 1))
    dual, events = client.run_and_wait(_pipeline("dual", 2))
    assert single.state == dual.state == gateway_pb2.RUN_STATE_SUCCEEDED, (single.reason, dual.reason)
    assert dual.pipeline.train.workers == 2  # the run record says how many workers trained
    ended = [e.train.epoch for e in events if e.WhichOneof("event") == "train" and e.train.epoch_finished]
    assert ended == [1, 2, 3]
    assert set(dual.metrics) == set(single.metrics) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    one, two = (
        json.loads(store.get_bytes(f"models/{r.model.name}/{r.model.version}/cookline.json")) for r in (single, dual)
    )
    assert set(one) == set(two)
    differ = {"name", "version", "run_id", "created_at", "metrics", "evaluation", "pipeline", "dataset", "checksums"}
    for key in set(one) - differ:  # inputs, outputs, classes, columns, fitted ops, formats, framework, ...
        assert one[key] == two[key], key
    assert set(one.get("checksums", {})) == set(two.get("checksums", {}))  # the same files (other weights)
    assert one["dataset"]["version"] == two["dataset"]["version"]  # the same rows (named after the pipeline)
    assert two["evaluation"]["rows"] == one["evaluation"]["rows"]
    assert int(two["pipeline"]["train"]["workers"]) == 2 and int(one["pipeline"]["train"]["workers"]) == 1
    files = {k.split("/", 3)[3] for k in store.list(f"models/single/{single.model.version}/")}
    assert files == {k.split("/", 3)[3] for k in store.list(f"models/dual/{dual.model.version}/")}


def test_more_workers_than_peers_fail_the_run_naming_the_field(client, peer):
    run, _ = client.run_and_wait(_pipeline("toomany", 3, batch_size=12))
    assert run.state == gateway_pb2.RUN_STATE_FAILED
    assert "train.workers: 3 needs 3 train replicas in COOKLINE_TRAIN_PEERS" in run.reason
