"""Four pipeline runs at once (iris under four names, each with its own seeds): each gets its
own dataset, model and metrics, and nothing of one run leaks into another."""

import json
import threading

import pytest

from cookline.client import Client
from cookline.v1 import gateway_pb2
from helpers import iris_pipeline, iris_rows
from services.common.store import store_from_env

SEEDS = (11, 22, 33, 44)


def pipeline(seed: int) -> str:
    return iris_pipeline(
        f"iris-s{seed}",
        process=f"[{{standardize: {{}}}}, {{shuffle: {{buffer: 200, seed: {seed}}}}}]",
        split=f"{{validation: 0.2, seed: {seed}}}",
        train="{model: mlp, hidden_units: [16], epochs: 40, batch_size: 8, learning_rate: 0.01}",
    )


@pytest.mark.timeout(900)
def test_four_runs_at_once_each_get_their_own_dataset_model_and_metrics(stack):
    services, env = stack
    store = store_from_env(env)
    finals, errors = {}, []

    def one(seed, client):
        try:
            finals[seed] = client.run_and_wait(pipeline(seed))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with Client(env=env) as client:
        threads = [threading.Thread(target=one, args=(seed, client)) for seed in SEEDS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        features, species = iris_rows()
        for seed in SEEDS:
            final, events = finals[seed]
            name = f"iris-s{seed}"
            assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED, final.reason
            assert [e.sequence for e in events] == list(range(len(events)))
            assert all(e.run_id == final.run_id for e in events)
            assert final.dataset.name == name and final.model.name == name
            manifest = json.loads(store.get_bytes(f"datasets/{name}/{final.dataset.version}/manifest.json"))
            assert manifest["num_rows"] == 150
            meta = json.loads(store.get_bytes(f"models/{name}/{final.model.version}/cookline.json"))
            assert meta["run_id"] == final.run_id
            assert meta["dataset"] == {"name": name, "version": final.dataset.version}
            assert int(meta["pipeline"]["split"]["seed"]) == seed
            assert meta["metrics"] == pytest.approx(dict(final.metrics))
            # its own evaluation: the held-out rows of its own split seed
            assert int(meta["evaluation"]["rows"]) == final.evaluation.rows > 0
            # each model answers for itself, and knows iris
            predicted = [row["label"] for row in client.predict(name, features)]
            assert sum(p == s for p, s in zip(predicted, species, strict=True)) / len(species) > 0.8
        assert len({finals[s][0].run_id for s in SEEDS}) == 4
    assert services.exited() == {}
