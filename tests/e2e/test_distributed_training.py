"""train.workers: 2 on the live stack: the chief (the stack's train service) and a second train
replica, listed in COOKLINE_TRAIN_PEERS, train together; the run publishes what a single-worker
run of the same pipeline publishes, and its record says how many workers trained.

Faults: SIGKILL of the second replica's worker process mid-epoch ends the attempt UNAVAILABLE, and
the gateway's retry resumes every worker from the chief's last checkpoint (the epochs continue);
cancelling the run ends both worker processes, and the replicas take the next run."""

import json
import os
import select
import signal
import time
from datetime import datetime

import pytest

from cookline.stack import Stack
from cookline.v1 import gateway_pb2
from helpers import child_processes, iris_pipeline, train_peer_ports, watch_and_kill_after_checkpoint

WORKER = "services.train.distributed"  # a worker process's module (its command line)


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


def _pipeline(name: str, workers: int, batch_size: int = 10, epochs: int = 3, more: str = "") -> str:
    return iris_pipeline(
        name,
        split="{validation: 0.2, seed: 7}",
        train=f"{{model: mlp, epochs: {epochs}, batch_size: {batch_size}, workers: {workers}{more}}}",
    )


def _workers(stack, peer) -> dict[str, list[int]]:
    """The live worker processes of the chief's train service and of the second replica's."""
    return {
        "chief": child_processes(stack[0].procs["train"].pid, WORKER),
        "peer": child_processes(peer.procs["train"].pid, WORKER),
    }


def _wait_gone(pids: list[int], timeout: float) -> None:
    """Waits until every process in `pids` has ended (pidfd: readable once the process exits)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:  # already gone
            continue
        try:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            assert ready, f"worker process {pid} still runs {timeout} s after the cancel"
        finally:
            os.close(fd)


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


FAULT_EPOCHS = 12


def test_a_killed_worker_ends_the_attempt_and_every_worker_resumes_from_the_checkpoint(client, store, stack, peer):
    text = _pipeline(
        "faulty", 2, batch_size=4, epochs=FAULT_EPOCHS, more=", learning_rate: 0.01, progress_every_batches: 5"
    )
    killed = []

    def kill_the_peers_worker():
        (pid,) = _workers(stack, peer)["peer"]
        os.kill(pid, signal.SIGKILL)
        killed.append(time.time())

    run = client.submit(text)
    events, killed_at = watch_and_kill_after_checkpoint(
        client, run.run_id, store, kill_the_peers_worker, epoch=2, mid_epoch=True
    )
    final = client.get_run(run.run_id)

    assert killed_at is not None, "the run ended before the kill"
    assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED, final.reason
    # the gateway retries UNAVAILABLE only: the attempt ended so, naming the lost worker
    retry = next(i for i, e in enumerate(events) if e.WhichOneof("event") == "stage" and "retrying" in e.stage.message)
    assert "train worker 1" in events[retry].stage.message and "exit status -9" in events[retry].stage.message
    ended = datetime.fromisoformat(events[retry].time).timestamp()
    print(f"the attempt ended {ended - killed[0]:.2f} s after the SIGKILL")  # not TF's ~8 s collective timeout
    before = [e.train.epoch for e in events[:retry] if e.WhichOneof("event") == "train" and e.train.epoch_finished]
    assert before == list(range(1, len(before) + 1)) and before[-1] >= killed_at[1]
    after = [e.train for e in events[retry:] if e.WhichOneof("event") == "train"]
    assert after[0].resumed_from_epoch >= killed_at[1]  # the chief's checkpoint, not epoch 0
    finished_after = [p.epoch for p in after if p.epoch_finished]
    assert finished_after == list(range(after[0].resumed_from_epoch + 1, FAULT_EPOCHS + 1))  # continued
    # every worker, not only the chief's, started from that checkpoint (each logs it)
    with open(os.path.join(peer.log_dir, "train.log")) as f:
        assert f"worker 1: resuming after epoch {after[0].resumed_from_epoch} from runs/{run.run_id}/" in f.read()
    with open(os.path.join(stack[0].log_dir, "train.log")) as f:
        assert f"worker 0: resuming after epoch {after[0].resumed_from_epoch} from runs/{run.run_id}/" in f.read()
    assert store.exists(f"models/faulty/{final.model.version}/cookline.json")
    assert list(store.list(f"runs/{run.run_id}/checkpoints/")) == []


def test_cancel_ends_every_worker_and_the_replicas_take_the_next_run(client, stack, peer):
    text = _pipeline("cancelled", 2, batch_size=4, epochs=500, more=", progress_every_batches: 5")
    run = client.submit(text)
    workers = cancelled_at = None
    for event in client.watch(run.run_id):
        if cancelled_at is None and event.WhichOneof("event") == "train" and event.train.epoch >= 2:
            workers = _workers(stack, peer)
            cancelled_at = time.monotonic()
            client.cancel(run.run_id)
        last = event
    assert workers is not None and len(workers["chief"]) == len(workers["peer"]) == 1, workers
    assert last.WhichOneof("event") == "finished" and last.finished.state == gateway_pb2.RUN_STATE_CANCELLED
    assert client.get_run(run.run_id).reason == "cancelled during train"
    _wait_gone(workers["chief"] + workers["peer"], timeout=10.0)  # docs/scaling.md: within 2 s
    print(f"worker processes gone {time.monotonic() - cancelled_at:.2f} s after CancelRun")
    assert _workers(stack, peer) == {"chief": [], "peer": []}

    after, _ = client.run_and_wait(_pipeline("aftercancel", 2, epochs=1))
    assert after.state == gateway_pb2.RUN_STATE_SUCCEEDED, after.reason
