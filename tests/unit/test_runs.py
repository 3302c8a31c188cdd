"""The gateway's run store: gap-free event logs, persisted, and watchers that always get the end."""

import threading

import pytest

from cookline.v1 import gateway_pb2, train_pb2
from gateway.runs import RunStore
from services.common.errors import Fail


def new_run(runs: RunStore) -> str:
    run_id = RunStore.new_id()
    runs.create(gateway_pb2.Run(run_id=run_id, state=gateway_pb2.RUN_STATE_QUEUED))
    return run_id


def test_watchers_racing_the_end_of_a_run_always_get_every_event(local_store):
    runs = RunStore(local_store)
    for _ in range(30):
        run_id = new_run(runs)
        seen: list[list[int]] = [[] for _ in range(4)]

        def watch(out, run_id=run_id):
            out.extend(e.sequence for e in runs.watch(run_id, 0))

        watchers = [threading.Thread(target=watch, args=(out,)) for out in seen]
        for w in watchers:
            w.start()
        for epoch in range(5):
            runs.append(run_id, train=train_pb2.TrainProgress(epoch=epoch + 1))
        runs.finish(run_id, state=gateway_pb2.RUN_STATE_SUCCEEDED)
        for w in watchers:
            w.join(timeout=10)
            assert not w.is_alive()
        assert all(s == list(range(6)) for s in seen)


def test_a_run_is_replayed_from_the_store_by_a_new_gateway(local_store):
    first = RunStore(local_store)
    run_id = new_run(first)
    first.append(run_id, stage=gateway_pb2.StageEvent(stage=gateway_pb2.STAGE_COLLECT))
    first.finish(run_id, state=gateway_pb2.RUN_STATE_FAILED, reason="collect failed: NOT_FOUND: x")
    second = RunStore(local_store)  # a restarted gateway: nothing in memory
    assert second.get(run_id).reason == "collect failed: NOT_FOUND: x"
    events = list(second.watch(run_id, 1))
    assert [e.sequence for e in events] == [1] and events[0].finished.state == gateway_pb2.RUN_STATE_FAILED
    assert [r.run_id for r in second.list(10)] == [run_id]


@pytest.mark.parametrize("run_id", ["nope", "../etc", ""])
def test_unknown_or_malformed_run_ids(local_store, run_id):
    with pytest.raises(Fail) as info:
        RunStore(local_store).get(run_id)
    assert info.value.code.name in ("NOT_FOUND", "INVALID_ARGUMENT")


def test_a_restarted_gateway_finds_the_runs_left_unfinished(local_store):
    first = RunStore(local_store)
    queued, running, done, torn = (new_run(first) for _ in range(4))
    first.update(running, state=gateway_pb2.RUN_STATE_RUNNING, stage=gateway_pb2.STAGE_TRAIN)
    first.finish(done, state=gateway_pb2.RUN_STATE_SUCCEEDED)
    # died between the two writes of finish(): the record is final, its finished event is missing
    first.update(torn, state=gateway_pb2.RUN_STATE_FAILED, reason="train failed: INTERNAL: x")
    second = RunStore(local_store)  # a restarted gateway: nothing in memory
    assert sorted(r.run_id for r in second.unfinished()) == sorted([queued, running])
    # the torn run's watchers end: its finished event was added, once
    events = list(second.watch(torn, 0))
    assert [e.WhichOneof("event") for e in events] == ["finished"]
    assert events[0].finished.reason == "train failed: INTERNAL: x"
    assert sorted(r.run_id for r in RunStore(local_store).unfinished()) == sorted([queued, running])
    assert len(list(RunStore(local_store).watch(torn, 0))) == 1
