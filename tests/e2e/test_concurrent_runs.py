"""Four pipeline runs at once (iris under four names, each with its own seeds): each gets its
own dataset, model and metrics, and nothing of one run leaks into another."""
import csv
import json
import os
import threading

import pytest

from cookline.client import Client
from cookline.v1 import gateway_pb2
from services.common.store import store_from_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IRIS_CSV = os.path.join(ROOT, "examples", "data", "iris.csv")
SEEDS = (11, 22, 33, 44)


def iris():
    with open(IRIS_CSV) as f:
        rows = list(csv.DictReader(f))
    return [[float(r[c]) for c in ("sepal_length", "sepal_width", "petal_length", "petal_width")] for r in rows], \
        [r["species"] for r in rows]


def pipeline(seed: int) -> str:
    return (f"name: iris-s{seed}\ncollect: {{source: {IRIS_CSV}, label: species}}\n"
            f"process: [{{standardize: {{}}}}, {{shuffle: {{buffer: 200, seed: {seed}}}}}]\n"
            f"split: {{validation: 0.2, seed: {seed}}}\n"
            f"train: {{model: mlp, hidden_units: [16], epochs: 40, batch_size: 8, learning_rate: 0.01}}\n")


@pytest.mark.timeout(900)
def test_four_runs_at_once_each_get_their_own_dataset_model_and_metrics(stack):
    services, env = stack
    store = store_from_env(env)
    finals, errors = {}, []

    def one(seed, client):
        try:
            run = client.submit(pipeline(seed))
            events = list(client.watch(run.run_id))
            finals[seed] = (client.get_run(run.run_id), events)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    with Client(env=env) as client:
        threads = [threading.Thread(target=one, args=(seed, client)) for seed in SEEDS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        features, species = iris()
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
            assert sum(p == s for p, s in zip(predicted, species)) / len(species) > 0.8
        assert len({finals[s][0].run_id for s in SEEDS}) == 4
    assert services.exited() == {}
