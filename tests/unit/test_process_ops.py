"""Every process op in-process: validation naming the parameter, fitting on the TRAIN rows, applying
(Fit / Process through the real services: tests/integration/test_process_service.py)."""

import grpc
import numpy as np
import pytest

from cookline import tensors
from cookline.spec import SpecError
from cookline.v1 import pipeline_pb2 as pb
from services.common.errors import Fail, status_of
from services.process import ops
from services.process.ops.images import BoxAugment, resize_bilinear


def op(**kind):
    return pb.Op(**kind)


def run(op_list, batches, epoch=0, batch_size=1000, training=True):
    fitted, rows = ops.fit(op_list, lambda: iter(batches))
    out = list(ops.apply(fitted, iter(batches), epoch, batch_size, training))
    return fitted, {k: np.concatenate([b[k] for b in out]) for k in out[0]}


def fitted_value(fitted_op, name):
    return tensors.to_numpy(fitted_op.fitted[name])


@pytest.mark.parametrize(
    "bad, where",
    [
        (op(resize=pb.ResizeOp(height=0, width=4)), "process[0].resize.height: 0 is not in [1, 4096]"),
        (op(resize=pb.ResizeOp(height=4, width=5000)), "process[0].resize.width: 5000 is not in [1, 4096]"),
        (op(random_rotation=pb.RandomRotationOp(max_degrees=0)), "process[0].random_rotation.max_degrees"),
        (op(random_rotation=pb.RandomRotationOp(max_degrees=200)), "process[0].random_rotation.max_degrees"),
        (op(random_brightness=pb.RandomBrightnessOp(max_delta=1.5)), "process[0].random_brightness.max_delta"),
        (op(random_flip=pb.RandomFlipOp(mode="diagonal")), "process[0].random_flip.mode: 'diagonal' is not one of"),
        (op(vectorize_text=pb.VectorizeTextOp(mode="bert")), "process[0].vectorize_text.mode"),
        (op(vectorize_text=pb.VectorizeTextOp(max_tokens=-1)), "process[0].vectorize_text.max_tokens"),
        (op(fill_missing=pb.FillMissingOp(strategy="median")), "process[0].fill_missing.strategy"),
        (op(lookup=pb.LookupOp(max_values=-3)), "process[0].lookup.max_values"),
        (op(shuffle=pb.ShuffleOp(buffer=-1)), "process[0].shuffle.buffer"),
        (pb.Op(), "process[0]: no op given (known ops: standardize, min_max"),
    ],
)
def test_out_of_range_parameters_name_the_op_and_field(bad, where):
    with pytest.raises(SpecError) as info:
        ops.validate([bad])
    code, message = status_of(info.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and where in message


def test_min_max_and_fill_missing_fit_on_the_given_rows():
    x = np.array([[1, np.nan], [3, 4], [5, 8]], dtype=np.float32)
    batches = [{"features": x, "label": np.zeros(3, np.int32)}]
    fitted, out = run([op(fill_missing=pb.FillMissingOp()), op(min_max=pb.MinMaxOp())], batches)
    np.testing.assert_allclose(fitted_value(fitted[0], "value"), [3, 6])
    np.testing.assert_allclose(fitted_value(fitted[1], "min"), [1, 4])  # min_max saw the filled rows
    np.testing.assert_allclose(out["features"], [[0, 0.5], [0.5, 0], [1, 1]])
    _, const = run([op(fill_missing=pb.FillMissingOp(strategy="constant", value=-1))], batches)
    assert const["features"][0, 1] == -1


def test_standardize_on_missing_values_asks_for_fill_missing():
    batches = [{"features": np.array([[np.nan]], np.float32), "label": np.zeros(1, np.int32)}]
    with pytest.raises(Fail, match=r"process\[0\].standardize: 'features' has missing \(NaN\) values"):
        ops.fit([op(standardize=pb.StandardizeOp())], lambda: iter(batches))


def test_an_op_on_a_tensor_the_data_lacks_names_both():
    batches = [{"features": np.zeros((2, 2), np.float32), "label": np.zeros(2, np.int32)}]
    with pytest.raises(Fail, match=r"process\[0\].resize: the data has no 'image' tensor \(it has features, label\)"):
        run([op(resize=pb.ResizeOp(height=2, width=2))], batches)


def categorical_batches():
    cats = np.array([[b"red", b"s"], [b"blue", b"m"], [b"red", b"s"], [b"green", b""]], dtype=object)
    return [{"features": np.ones((4, 1), np.float32), "categorical": cats, "label": np.arange(4, dtype=np.int32)}]


def test_lookup_maps_train_vocabulary_to_ids_and_unseen_to_zero():
    fitted, out = run([op(lookup=pb.LookupOp())], categorical_batches())
    assert [v.decode() for v in fitted_value(fitted[0], "vocabulary")] == ["red", "blue", "green", "s", "m"]
    assert fitted_value(fitted[0], "columns").tolist() == [0, 0, 0, 1, 1]
    assert "categorical" not in out
    np.testing.assert_array_equal(out["features"], [[1, 1, 1], [1, 2, 2], [1, 1, 1], [1, 3, 0]])
    unseen = [
        {
            "features": np.ones((1, 1), np.float32),
            "categorical": np.array([[b"pink", b"m"]], dtype=object),
            "label": np.zeros(1, np.int32),
        }
    ]
    again = np.concatenate([b["features"] for b in ops.apply(fitted, unseen, 0, 10)])
    np.testing.assert_array_equal(again, [[1, 0, 2]])


def test_one_hot_has_a_column_per_seen_value_plus_unseen():
    fitted, out = run([op(one_hot=pb.OneHotOp(min_count=2))], categorical_batches())
    # column 0 keeps only "red" (seen twice), column 1 only "s": widths 2 + 2, after the 1 numeric column
    np.testing.assert_array_equal(out["features"], [[1, 0, 1, 0, 1], [1, 1, 0, 1, 0], [1, 0, 1, 0, 1], [1, 1, 0, 1, 0]])


def test_vectorize_text_modes_and_vocabulary_from_the_given_rows():
    texts = np.array([b"the cat sat", b"the dog", b"The cat and the dog!"], dtype=object)
    batches = [{"text": texts, "label": np.zeros(3, np.int32)}]
    fitted, out = run([op(vectorize_text=pb.VectorizeTextOp(mode="count", max_tokens=3))], batches)
    assert [v.decode() for v in fitted_value(fitted[0], "vocabulary")] == ["the", "cat", "dog"]
    np.testing.assert_array_equal(out["features"], [[1, 1, 1, 0], [0, 1, 0, 1], [1, 2, 1, 1]])
    assert "text" not in out
    _, multi = run([op(vectorize_text=pb.VectorizeTextOp(mode="multi_hot", max_tokens=3))], batches)
    assert multi["features"][2].tolist() == [1, 1, 1, 1]
    _, seq = run([op(vectorize_text=pb.VectorizeTextOp(mode="int", max_tokens=3, sequence_length=4))], batches)
    np.testing.assert_array_equal(seq["tokens"], [[2, 3, 1, 0], [2, 4, 0, 0], [2, 3, 1, 2]])
    fitted, tfidf = run([op(vectorize_text=pb.VectorizeTextOp())], batches)
    idf = fitted_value(fitted[0], "idf")
    assert idf[0] == pytest.approx(np.log1p(3 / 4))  # "the" is in all 3 rows
    assert tfidf["features"][2, 1] == pytest.approx(2 * idf[0])


def test_resize_matches_tensorflow_and_grayscale_uses_luma():
    import tensorflow as tf

    images = np.random.default_rng(0).integers(0, 255, (2, 5, 7, 3)).astype(np.float32)
    ours = resize_bilinear(images, 8, 3)
    theirs = tf.image.resize(images, (8, 3), method="bilinear").numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-3)
    batches = [{"image": images.astype(np.uint8), "label": np.zeros(2, np.int32)}]
    _, out = run([op(grayscale=pb.GrayscaleOp())], batches)
    expected = tf.image.rgb_to_grayscale(images.astype(np.uint8)).numpy()
    assert out["image"].shape == (2, 5, 7, 1) and np.abs(out["image"].astype(int) - expected).max() <= 1


@pytest.mark.parametrize(
    "augment",
    [
        op(random_flip=pb.RandomFlipOp(mode="both", seed=3)),
        op(random_rotation=pb.RandomRotationOp(max_degrees=90, seed=3)),
        op(random_brightness=pb.RandomBrightnessOp(max_delta=0.5, seed=3)),
    ],
)
def test_augmentations_are_seeded_fresh_each_epoch_and_train_only(augment):
    images = np.random.default_rng(1).integers(0, 255, (64, 6, 6, 1)).astype(np.uint8)
    batches = [{"image": images, "label": np.arange(64, dtype=np.int32)}]

    def epoch(n, training=True):
        return np.concatenate([b["image"] for b in ops.apply([augment], iter(batches), n, 16, training)])

    first = epoch(0)
    assert first.shape == images.shape and first.dtype == np.uint8
    assert not np.array_equal(first, images)
    np.testing.assert_array_equal(first, epoch(0))  # seeded
    assert not np.array_equal(first, epoch(1))  # drawn afresh each epoch
    np.testing.assert_array_equal(epoch(0, training=False), images)  # never outside TRAIN


def test_fit_skips_augmentation_and_shuffle_but_sees_earlier_deterministic_ops():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    batches = [{"features": x, "label": np.zeros(10, np.int32)}]
    fitted, _ = ops.fit(
        [op(shuffle=pb.ShuffleOp(buffer=4)), op(min_max=pb.MinMaxOp()), op(standardize=pb.StandardizeOp())],
        lambda: iter(batches),
    )
    np.testing.assert_allclose(fitted_value(fitted[2], "mean"), [0.5, 0.5])  # fitted on min_max's output


def test_output_fields_predict_the_processed_batches():
    batches = categorical_batches()
    fitted, out = run([op(one_hot=pb.OneHotOp()), op(standardize=pb.StandardizeOp())], batches)
    schema = {"features": ("float32", [1]), "categorical": ("string", [2]), "label": ("int32", [])}
    predicted = ops.output_fields(schema, fitted)
    assert predicted == {"features": ("float32", [out["features"].shape[1]]), "label": ("int32", [])}
    images = {"image": ("uint8", [8, 8, 3]), "label": ("int32", [])}
    assert ops.output_fields(images, [op(resize=pb.ResizeOp(height=4, width=5)), op(grayscale=pb.GrayscaleOp())]) == {
        "image": ("uint8", [4, 5, 1]),
        "label": ("int32", []),
    }
    texts = [{"text": np.array([b"a b", b"b c"], dtype=object), "label": np.zeros(2, np.int32)}]
    fitted, out = run([op(vectorize_text=pb.VectorizeTextOp(mode="multi_hot"))], texts)
    assert ops.output_fields({"text": ("string", []), "label": ("int32", [])}, fitted)["features"] == (
        "float32",
        [out["features"].shape[1]],
    )


def _scene_batch():
    """Two 8x8 images with one bright 2x4 block each, and its box (ymin, xmin, ymax, xmax fractions)."""
    image = np.zeros((2, 8, 8, 1), np.uint8)
    image[:, 2:4, 0:4] = 200
    boxes = np.zeros((2, 2, 4), np.float32)
    boxes[:, 0] = [0.25, 0.0, 0.5, 0.5]
    labels = np.array([[1, -1], [1, -1]], np.int32)
    return {"image": image, "boxes": boxes, "box_labels": labels, "box_count": np.array([1, 1], np.int32)}


def _box_of_pixels(image) -> list[float]:
    """The box around the bright pixels of one [h, w, 1] image, as fractions."""
    ys, xs = np.nonzero(image[..., 0] > 100)
    h, w = image.shape[:2]
    return [ys.min() / h, xs.min() / w, (ys.max() + 1) / h, (xs.max() + 1) / w]


def test_box_augment_and_random_flip_move_the_boxes_with_the_pixels():
    batch = _scene_batch()
    flip = op(box_augment=pb.BoxAugmentOp(flip="both", min_scale=1.0, max_scale=1.0, seed=3))
    for epoch in range(4):  # flips drawn afresh: every outcome keeps boxes on the pixels
        out = next(ops.chain([flip], [batch], epoch, training=True))
        for i in range(2):
            np.testing.assert_allclose(out["boxes"][i, 0], _box_of_pixels(out["image"][i]), atol=1e-6)
        assert out["box_labels"].tolist() == [[1, -1], [1, -1]] and out["box_count"].tolist() == [1, 1]
    plain = next(ops.chain([op(random_flip=pb.RandomFlipOp(mode="both", seed=1))], [batch], 0, training=True))
    for i in range(2):
        np.testing.assert_allclose(plain["boxes"][i, 0], _box_of_pixels(plain["image"][i]), atol=1e-6)
    # shrinking by a half: the block is 1x2 pixels somewhere in the canvas, and its box says where
    for seed in range(3):
        pixels, box = BoxAugment._rescale(batch["image"][0], batch["boxes"][0, :1], 0.5, np.random.default_rng(seed))
        assert box[0, 2] - box[0, 0] == pytest.approx(0.125) and box[0, 3] - box[0, 1] == pytest.approx(0.25)
        np.testing.assert_allclose(box[0], _box_of_pixels(pixels), atol=1e-6)
    # outside TRAIN nothing moves
    assert next(ops.chain([flip], [batch], 0, training=False)) is batch


def test_box_augment_drops_boxes_cropped_away_and_rotation_refuses_boxes():
    batch = _scene_batch()
    batch["boxes"][:, 1], batch["box_labels"][:, 1], batch["box_count"][:] = [0.0, 0.9, 0.05, 1.0], 2, 2
    zoom = op(box_augment=pb.BoxAugmentOp(flip="none", min_scale=1.0, max_scale=4.0, seed=0))
    out = next(ops.chain([zoom], [batch], 0, training=True))
    for i in range(2):  # enlarged and cropped: boxes cut away are dropped, the rest close up
        n = out["box_count"][i]
        assert (out["box_labels"][i, n:] == -1).all() and (out["boxes"][i, n:] == 0).all()
        assert ((out["boxes"][i, :n] >= 0) & (out["boxes"][i, :n] <= 1)).all()
    rotate = op(random_rotation=pb.RandomRotationOp(max_degrees=10))
    with pytest.raises(Fail) as error:
        next(ops.chain([rotate], [batch], 0, training=True))
    assert "process[0].random_rotation: does not move boxes; use box_augment" in str(error.value)
