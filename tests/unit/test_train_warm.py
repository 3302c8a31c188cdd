"""Warm models (services/train/warm.py): a run of an architecture trained before reuses that model's
traced train step, and trains exactly as a freshly built model would."""

import numpy as np
import pytest

from cookline.v1 import pipeline_pb2
from services.train import models, warm

SPEC = pipeline_pb2.TrainSpec(model="mlp", hidden_units=[16], epochs=2, batch_size=32, learning_rate=0.01)


def data(seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 600).astype(np.int32)
    x = (rng.normal(0, 1, (3, 8))[y] + rng.normal(0, 1, (600, 8))).astype(np.float32)
    return x, y


def train(model, x, y):
    history = model.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    return history.history["loss"], [w.copy() for w in model.get_weights()]


def test_a_warm_model_trains_exactly_like_a_fresh_one():
    x, y = data()
    pool = warm.WarmModels(size=2)
    key = warm.key(SPEC, 8, 3, "float32", 0)
    earlier = models.build(SPEC, 8, 3)
    train(earlier, *data(seed=1))  # an earlier run: trained weights, a built optimizer, a traced step
    step = earlier.train_function
    pool.give(key, earlier)

    fresh = models.build(SPEC, 8, 3)
    reference = models.build(SPEC, 8, 3)
    reference.set_weights(fresh.get_weights())  # the same start, trained the ordinary way
    expected_loss, expected_weights = train(reference, x, y)

    reused = pool.take(key, fresh)
    assert reused is earlier and pool.reused == 1
    for got, want in zip(reused.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)  # the run's own initial weights, not the earlier run's
    assert int(reused.optimizer.iterations.numpy()) == 0
    loss, weights = train(reused, x, y)
    assert reused.train_function is step  # the traced step was reused, not rebuilt
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    for got, want in zip(weights, expected_weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_only_the_same_architecture_and_settings_share_a_model():
    pool = warm.WarmModels(size=2)
    key = warm.key(SPEC, 8, 3, "float32", 0)
    model = models.build(SPEC, 8, 3)
    pool.give(key, model)
    wider = pipeline_pb2.TrainSpec()
    wider.CopyFrom(SPEC)
    wider.hidden_units[:] = [32]
    other_run = pipeline_pb2.TrainSpec()
    other_run.CopyFrom(SPEC)
    other_run.epochs, other_run.batch_size = 9, 64  # run-only settings: same graph
    assert warm.key(wider, 8, 3, "float32", 0) != key
    assert warm.key(SPEC, 8, 4, "float32", 0) != key  # another number of classes
    assert warm.key(other_run, 8, 3, "float32", 0) == key
    fresh = models.build(wider, 8, 3)
    assert pool.take(warm.key(wider, 8, 3, "float32", 0), fresh) is fresh
    assert pool.take(key, models.build(SPEC, 8, 3)) is model
    assert pool.take(key, fresh) is fresh  # handed out: nobody else gets it until it is given back


def test_the_pool_keeps_at_most_its_size_least_recently_used_out_first(monkeypatch):
    pool = warm.WarmModels(size=2)
    built = {}
    for units in (4, 5, 6):
        spec = pipeline_pb2.TrainSpec(model="mlp", hidden_units=[units], learning_rate=0.01)
        built[units] = (warm.key(spec, 8, 3, "float32", 0), models.build(spec, 8, 3), spec)
        pool.give(*built[units][:2])
    oldest_key, _, oldest_spec = built[4]
    fresh = models.build(oldest_spec, 8, 3)
    assert pool.take(oldest_key, fresh) is fresh  # dropped
    assert pool.take(built[6][0], models.build(built[6][2], 8, 3)) is built[6][1]
    monkeypatch.setenv("COOKLINE_TRAIN_WARM_MODELS", "0")
    none_kept = warm.WarmModels()
    none_kept.give(built[5][0], built[5][1])
    fresh = models.build(built[5][2], 8, 3)
    assert none_kept.take(built[5][0], fresh) is fresh
    for bad in ("-1", "65", "two"):
        monkeypatch.setenv("COOKLINE_TRAIN_WARM_MODELS", bad)
        with pytest.raises(ValueError, match="COOKLINE_TRAIN_WARM_MODELS"):
            warm.WarmModels()
