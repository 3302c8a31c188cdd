"""The detector family in-process: targets drawn from boxes decode back to those boxes (peaks, sizes,
non-max suppression, thresholds), pycocotools' mAP of perfect and of poor detections, and the rules
of the pipeline file. (Training on the shapes data and serving: tests/e2e/test_detection.py.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cookline.spec import SpecError
from cookline.spec import train as train_spec
from cookline.v1 import pipeline_pb2 as pb
from services.train import detection

BOXES = np.array([[[0.1, 0.1, 0.4, 0.5], [0.5, 0.55, 0.9, 0.95], [0, 0, 0, 0]]], np.float32)
LABELS = np.array([[2, 0, -1]], np.int32)
COUNTS = np.array([2], np.int32)


def _maps_from_targets(target, classes):
    """Network output maps that decode to exactly the targets: heatmap logits from the Gaussians."""
    heat = np.clip(target[..., :classes], 1e-6, 1 - 1e-6)
    return np.concatenate([np.log(heat / (1 - heat)), target[..., classes : classes + 4]], axis=-1)


def test_targets_decode_back_to_the_boxes():
    target = detection.targets({"boxes": BOXES, "box_labels": LABELS, "box_count": COUNTS}, (16, 16), 3)
    assert target.shape == (1, 16, 16, 8) and target[..., 7].sum() == 2  # two centre cells
    boxes, kinds, scores, valid = (t.numpy() for t in detection.decode(_maps_from_targets(target, 3), 3, 0.5, 0.5, 5))
    assert valid.tolist() == [2] and sorted(kinds[0, :2].tolist()) == [0, 2]
    order = np.argsort(kinds[0, :2])[::-1]  # class 2 first, as in BOXES
    np.testing.assert_allclose(boxes[0, :2][order], BOXES[0, :2], atol=1e-5)
    assert (scores[0, :2] > 0.99).all() and (boxes[0, 2:] == 0).all() and (scores[0, 2:] == 0).all()
    # max_detections cuts, and a score threshold above every peak leaves nothing
    assert detection.decode(_maps_from_targets(target, 3), 3, 0.5, 0.5, 1)[3].numpy().tolist() == [1]
    assert detection.decode(_maps_from_targets(target, 3), 3, 0.9999999, 0.5, 5)[3].numpy().tolist() == [0]


def test_coco_map_of_perfect_and_poor_detections():
    truth = [(BOXES[0, :2], LABELS[0, :2])]
    perfect = [(BOXES[0, :2], LABELS[0, :2], np.array([0.9, 0.8]))]
    assert detection.coco_metrics(truth, perfect, 3, 64, 64) == pytest.approx({"map": 1.0, "map50": 1.0, "map75": 1.0})
    wrong_class = [(BOXES[0, :2], np.array([1, 1]), np.array([0.9, 0.8]))]
    assert detection.coco_metrics(truth, wrong_class, 3, 64, 64)["map50"] == 0.0
    shifted = BOXES[0, :2] + [0.05, 0.05, 0.05, 0.05]  # IoU about 0.6: counts at 0.5, not at 0.75
    metrics = detection.coco_metrics(truth, [(shifted, LABELS[0, :2], np.array([0.9, 0.8]))], 3, 64, 64)
    assert metrics["map50"] == pytest.approx(1.0) and metrics["map75"] == 0.0 and 0 < metrics["map"] < 1
    assert detection.coco_metrics(truth, [(np.zeros((0, 4)), [], [])], 3, 64, 64)["map50"] == 0.0


def test_detector_settings_have_defaults_and_ranges():
    spec = train_spec.resolve(pb.TrainSpec(model="detector"))
    assert (spec.backbone, list(spec.conv_filters), spec.max_detections) == ("cnn", [32, 64, 128], 20)
    assert (spec.score_threshold, spec.iou_threshold) == (0.3, 0.5)
    for bad, where in (
        (pb.TrainSpec(model="detector", iou_threshold=1.5), "train.iou_threshold: 1.5 is not in (0, 1]"),
        (pb.TrainSpec(model="detector", max_detections=5000), "train.max_detections: 5000 is not in [1, 1000]"),
        (pb.TrainSpec(model="detector", backbone="resnet"), "train.backbone: 'resnet' is not one of cnn, mobilenet_v2"),
        (pb.TrainSpec(model="cnn", score_threshold=0.5), "train.score_threshold: applies to model detector, not 'cnn'"),
        (pb.TrainSpec(model="detector", workers=2, batch_size=32), "train.workers: the detector family trains"),
        (pb.TrainSpec(model="detector", class_weights={"a": 2}), "train.class_weights: the detector weighs no"),
    ):
        with pytest.raises(SpecError) as error:
            train_spec.resolve(bad)
        assert where in str(error.value)
    with pytest.raises(SpecError) as error:
        train_spec.check_detection_data("detector", {"image": ("uint8", [8, 8, 3]), "label": ("int32", [])})
    assert "train.model: 'detector' needs boxes" in str(error.value)


@pytest.mark.parametrize("backbone", ["cnn", "mobilenet_v2"])
def test_the_backbone_is_a_model_of_its_own_and_the_grid_has_stride_4(backbone):
    spec = train_spec.resolve(pb.TrainSpec(model="detector", backbone=backbone, alpha=0.35 if backbone != "cnn" else 0))
    model = detection.build(spec, [32, 32, 3], 2)
    assert model.output.shape[1:] == (8, 8, 2 + 4)
    assert model.get_layer("backbone").count_params() > 0  # where a base model's weights would go
    out = detection.predict_fn(model, spec, 2)(tf.zeros([2, 32, 32, 3], tf.uint8))
    assert out[0].shape == (2, 20, 4)


def test_a_checkpointed_detector_loads_with_its_loss(tmp_path):
    """train's checkpoints (model.save / keras.models.load_model) resume a detector run."""
    spec = train_spec.resolve(pb.TrainSpec(model="detector", conv_filters=[8, 8, 8]))
    model = detection.build(spec, [16, 16, 3], 2)
    images = np.random.default_rng(0).integers(0, 255, (2, 16, 16, 3)).astype(np.uint8)
    model.fit(
        images,
        detection.targets(
            {
                "boxes": BOXES[:, :1].repeat(2, 0),
                "box_labels": np.zeros((2, 1), np.int32),
                "box_count": np.ones(2, np.int32),
            },
            (4, 4),
            2,
        ),
        verbose=0,
    )
    model.save(tmp_path / "checkpoint.keras")
    loaded = keras.models.load_model(tmp_path / "checkpoint.keras")
    assert isinstance(loaded.loss, detection.DetectionLoss) and loaded.loss.num_classes == 2
    np.testing.assert_allclose(loaded(images), model(images), atol=1e-6)
