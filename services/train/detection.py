"""The detector family: a single-stage, CenterNet-style object detector on the cnn or mobilenet_v2
backbone, its training targets, its in-model decoding (peaks, boxes, non-max suppression) and its
evaluation with pycocotools.

The network maps an image to a grid at STRIDE pixels per cell with, per cell, one heatmap logit per
class (is an object's centre here?), the object's height and width (fractions of the image) and the
centre's offset inside the cell. Training compares it with targets drawn from the boxes (a Gaussian
peak at each centre; `targets`); serving and evaluation decode it the same way (`decode`): heatmap
peaks become boxes, and tf.image.combined_non_max_suppression keeps the best per class, within the
score and IoU thresholds and max_detections of the pipeline file (train.score_threshold, ...).

The backbone is built by the same functions as the cnn and mobilenet_v2 classifiers
(models.cnn_features, models.mobilenet_features), as a model of its own named "backbone". A
detector started from train.base (`build_on`) takes that model from a detector base, or cuts it
from a classifier base at its deepest feature map (`backbone_of`); train.freeze and
train.fine_tune count its layers.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from cookline.v1 import pipeline_pb2, train_pb2
from services.common.errors import invalid
from services.train import transfer
from services.train.feed import EpochFeed

if TYPE_CHECKING:  # models imports this module's callers; plan is only a type here
    from services.train import models
    from services.train.plan import Plan

# Pixels per heatmap cell.
STRIDE = 4
# Channels of the upsampling and head convolutions.
HEAD_FILTERS = 64
# Heatmap peaks considered per image before non-max suppression.
CANDIDATES = 100
# Held-out images kept with their boxes in the evaluation (drawn by `cookline report`).
EXAMPLES = 6
# Weights of the box-size and centre-offset losses beside the heatmap's focal loss.
SIZE_WEIGHT, OFFSET_WEIGHT = 5.0, 1.0
# Name of the heatmap's output layer (new in a detector started from a detector).
HEATMAP = "heatmap"


def grid(height: int, width: int) -> tuple[int, int]:
    """Rows and columns of the output grid of an image of height x width."""
    return -(-height // STRIDE), -(-width // STRIDE)


def build(spec: pipeline_pb2.TrainSpec, input_shape, num_classes: int, input_dtype: str = "uint8") -> keras.Model:
    """The trainable detector: image [h, w, c] -> "maps" [gh, gw, classes + 4] (heatmap logits, then
    height, width, offset y, offset x), compiled with its loss."""
    from services.train import models

    shape = tuple(int(d) for d in input_shape)
    inputs = keras.Input(shape=shape, name="features", dtype=input_dtype)
    image = keras.Input(shape=shape, dtype=input_dtype)
    if spec.backbone == "mobilenet_v2":
        features, stride = models.mobilenet_features(spec, image, input_dtype)
    else:
        features, stride = models.cnn_features(spec, image, input_dtype)
    backbone = keras.Model(image, features, name=transfer.BACKBONE)
    model = _heads(inputs, backbone(inputs), stride, num_classes)
    compile_model(model, spec, num_classes, spec.learning_rate)
    return model


def build_on(base: keras.Model, spec: pipeline_pb2.TrainSpec, input_shape, num_classes: int) -> keras.Model:
    """The trainable detector on train.base's network (`backbone_of`: a classifier's convolutions, or
    a detector's backbone), compiled, train.freeze applied to the backbone. A detector base also
    gives its head layers wherever their weights' shapes fit; the heatmap's output layer is always
    new (one channel per class of the new data). The input takes the base's dtype (export casts to it)."""
    shape = tuple(int(d) for d in input_shape)
    backbone = backbone_of(base, spec.base)
    inputs = keras.Input(shape=shape, name="features", dtype=base.inputs[0].dtype)
    features = backbone(inputs, training=False)  # frozen or not, batch norm keeps its statistics
    stride = max(1, round(shape[0] / int(features.shape[1])))
    model = _heads(inputs, features, stride, num_classes)
    if _is_detector(base):
        _keep_heads(base, model)
    transfer.check_counts(model, spec)
    transfer.freeze(model, spec)
    compile_model(model, spec, num_classes, spec.learning_rate)
    return model


def compile_model(model: keras.Model, spec: pipeline_pb2.TrainSpec, num_classes: int, learning_rate: float) -> None:
    """Compiles the detector with its loss and train.optimizer at `learning_rate` (again after
    train.fine_tune changes which layers train)."""
    from services.train import models

    model.compile(optimizer=models.optimizer(spec, learning_rate), loss=DetectionLoss(num_classes))


def _heads(inputs, features, stride: int, num_classes: int) -> keras.Model:
    """The detector on a backbone's feature map (`stride` pixels per cell): upsampled to STRIDE, then
    the heatmap and box heads."""
    x = features
    while stride > STRIDE:  # upsample to the output grid
        x = keras.layers.UpSampling2D(2, interpolation="bilinear")(x)
        x = _conv(x)
        stride //= 2
    gh, gw = grid(int(inputs.shape[1]), int(inputs.shape[2]))
    if (int(x.shape[1]), int(x.shape[2])) != (gh, gw):
        x = keras.layers.Resizing(gh, gw, interpolation="bilinear")(x)
    heat = _conv(x)
    heat = keras.layers.Conv2D(num_classes, 1, bias_initializer=keras.initializers.Constant(-2.19), name=HEATMAP)(
        heat
    )  # -2.19: a prior of 0.1 per cell, as CenterNet starts
    box = _conv(x)
    box = keras.layers.Conv2D(4, 1, name="box")(box)
    outputs = keras.layers.Concatenate(name="maps")([heat, box])
    return keras.Model(inputs, outputs, name="detector")


def _is_detector(network: keras.Model) -> bool:
    """True for a detector's network (a nested transfer.BACKBONE and the "maps" output), as published."""
    names = {layer.name for layer in network.layers}
    return transfer.BACKBONE in names and "maps" in names


def backbone_of(network: keras.Model, base: str) -> keras.Model:
    """The part of train.base's network a detector sits on, sharing its layers (and weights): a
    detector's transfer.BACKBONE; else the network up to its deepest feature map [h, w, channels] (a cnn's
    last pooling; inside a nested MobileNetV2, models.MOBILENET_FEATURES as the detector's own
    mobilenet_v2 backbone has), its flattening and dense layers dropped. INVALID_ARGUMENT naming
    train.base when it has none (an mlp, a linear or a text model)."""
    if _is_detector(network):
        return network.get_layer(transfer.BACKBONE)
    features = _feature_map(network)
    backbone = None if features is None else keras.Model(network.inputs, features, name=transfer.BACKBONE)
    if backbone is None or not any("Conv" in type(layer).__name__ for layer in transfer.leaves(backbone)):
        raise invalid(
            f"train.base: {base!r} has no convolutional layers a detector can sit on (no layer gives a feature "
            "map [height, width, channels] after a convolution); start a detector from a cnn, mobilenet_v2 or "
            "detector model"
        )
    return backbone


def _feature_map(model: keras.Model):
    """The symbolic tensor of `model`'s deepest feature map (rank 4), reached from model.inputs; None
    when it has none. Nested models are searched too (a classifier started from a base nests it, and
    mobilenet_v2 nests MobileNetV2)."""
    from services.train import models

    if any(layer.name == models.MOBILENET_FEATURES for layer in model.layers):
        return model.get_layer(models.MOBILENET_FEATURES).output
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            inner = _feature_map(layer)
            if inner is None:
                continue
            # the tensor this model feeds the nested one (Keras keeps a node per call; published
            # networks call each nested model once)
            source = layer._inbound_nodes[0].input_tensors[0]
            return keras.Model(layer.inputs, inner, name=f"{layer.name}_features")(source)
        if len(layer.output.shape) == 4:
            return layer.output
    return None


def _keep_heads(base: keras.Model, model: keras.Model) -> None:
    """Copies the weights of a detector base's head layers into `model`'s where the layers match in
    order, kind and weight shapes; the heatmap output layer stays new."""
    mine = [layer for layer in model.layers if layer.name != transfer.BACKBONE and layer.weights]
    theirs = [layer for layer in base.layers if layer.name != transfer.BACKBONE and layer.weights]
    for new, old in zip(mine, theirs, strict=False):
        if new.name == HEATMAP or type(new) is not type(old):
            continue
        weights = old.get_weights()
        if [w.shape for w in weights] == [tuple(w.shape) for w in new.weights]:
            new.set_weights(weights)


def _conv(x):
    """A 3x3 convolution of the head, batch-normalised (the heads learn several times faster)."""
    x = keras.layers.Conv2D(HEAD_FILTERS, 3, padding="same", use_bias=False)(x)
    return keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=0.9)(x))


@keras.saving.register_keras_serializable(package="cookline")  # checkpoints reload it (a resumed run)
class DetectionLoss(keras.losses.Loss):
    """CenterNet's loss: focal loss on the heatmap (normalised by the number of objects), L1 on the
    size and offset at object centres. y_true is `targets`' [gh, gw, classes + 5]."""

    def __init__(self, num_classes: int, name: str = "detection_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes

    def call(self, y_true, y_pred):
        c = self.num_classes
        heat_true, size_true, offset_true, mask = (
            y_true[..., :c],
            y_true[..., c : c + 2],
            y_true[..., c + 2 : c + 4],
            y_true[..., c + 4 :],
        )
        heat = tf.clip_by_value(tf.sigmoid(y_pred[..., :c]), 1e-4, 1 - 1e-4)
        peak = tf.cast(tf.equal(heat_true, 1.0), tf.float32)
        positive = -tf.math.log(heat) * (1 - heat) ** 2 * peak
        negative = -tf.math.log(1 - heat) * heat**2 * (1 - heat_true) ** 4 * (1 - peak)
        per_image = tf.maximum(tf.reduce_sum(mask, axis=[1, 2, 3]), 1.0)
        focal = tf.reduce_sum(positive + negative, axis=[1, 2, 3]) / per_image
        size = tf.reduce_sum(tf.abs(y_pred[..., c : c + 2] - size_true) * mask, axis=[1, 2, 3]) / per_image
        offset = tf.reduce_sum(tf.abs(y_pred[..., c + 2 : c + 4] - offset_true) * mask, axis=[1, 2, 3]) / per_image
        return focal + SIZE_WEIGHT * size + OFFSET_WEIGHT * offset

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def targets(batch: dict[str, np.ndarray], cells: tuple[int, int], num_classes: int) -> np.ndarray:
    """The training targets of a batch (its "boxes", "box_labels" and "box_count"), on a grid of
    `cells` (rows, columns): [n, rows, columns, classes + 5] float32 holding, per cell, the class
    heatmaps (a Gaussian around each centre, 1 at the centre's cell), the height and width (fractions
    of the image) and centre offset in the cell at centre cells, and a 1 marking centre cells."""
    boxes, box_labels, counts = batch["boxes"], batch["box_labels"], batch["box_count"]
    gh, gw = cells
    out = np.zeros((len(boxes), gh, gw, num_classes + 5), np.float32)
    ys, xs = np.arange(gh, dtype=np.float32)[:, None], np.arange(gw, dtype=np.float32)[None, :]
    for i in range(len(boxes)):
        for (y0, x0, y1, x1), k in zip(boxes[i, : counts[i]], box_labels[i, : counts[i]], strict=True):
            cy, cx = (y0 + y1) / 2 * gh, (x0 + x1) / 2 * gw
            row, col = min(int(cy), gh - 1), min(int(cx), gw - 1)
            sy, sx = max((y1 - y0) * gh / 6, 0.4), max((x1 - x0) * gw / 6, 0.4)
            blob = np.exp(-((ys - row) ** 2) / (2 * sy * sy) - (xs - col) ** 2 / (2 * sx * sx))
            out[i, :, :, k] = np.maximum(out[i, :, :, k], blob)
            out[i, row, col, k] = 1.0
            out[i, row, col, num_classes : num_classes + 5] = [y1 - y0, x1 - x0, cy - row, cx - col, 1.0]
    return out


def decode(maps, num_classes: int, score_threshold: float, iou_threshold: float, max_detections: int):
    """The detections of the network's output maps [rows, gh, gw, classes + 4] (TensorFlow): boxes
    [rows, max_detections, 4] (ymin, xmin, ymax, xmax fractions, clipped to the image), class ids and
    scores [rows, max_detections], and how many of each row's slots hold a detection (the rest are
    zeros). Peaks of the heatmap (cells not below their 3x3 neighbours) are the candidates; non-max
    suppression runs per class."""
    maps = tf.cast(maps, tf.float32)
    gh, gw = int(maps.shape[1]), int(maps.shape[2])
    heat = tf.sigmoid(maps[..., :num_classes])
    peaks = heat * tf.cast(tf.equal(heat, tf.nn.max_pool2d(heat, 3, 1, "SAME")), tf.float32)
    rows = tf.shape(maps)[0]
    k = min(CANDIDATES, gh * gw * num_classes)
    scores, index = tf.math.top_k(tf.reshape(peaks, [rows, -1]), k=k)
    cell, kind = index // num_classes, index % num_classes
    row, col = cell // gw, cell % gw
    values = tf.gather(tf.reshape(maps[..., num_classes:], [rows, gh * gw, 4]), cell, batch_dims=1)
    cy = (tf.cast(row, tf.float32) + values[..., 2]) / gh
    cx = (tf.cast(col, tf.float32) + values[..., 3]) / gw
    half_h, half_w = tf.maximum(values[..., 0], 0.0) / 2, tf.maximum(values[..., 1], 0.0) / 2
    boxes = tf.clip_by_value(tf.stack([cy - half_h, cx - half_w, cy + half_h, cx + half_w], axis=-1), 0.0, 1.0)
    per_class = tf.one_hot(kind, num_classes) * scores[..., None]
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :],
        per_class,
        max_output_size_per_class=max_detections,
        max_total_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        clip_boxes=False,
    )
    return nms.nmsed_boxes, tf.cast(nms.nmsed_classes, tf.int32), nms.nmsed_scores, nms.valid_detections


def thresholds(spec: pipeline_pb2.TrainSpec) -> tuple[float, float, int]:
    """(score_threshold, iou_threshold, max_detections) of a resolved train spec."""
    return float(spec.score_threshold), float(spec.iou_threshold), int(spec.max_detections)


def predict_fn(model: keras.Model, spec: pipeline_pb2.TrainSpec, num_classes: int):
    """images -> (boxes, class ids, scores, valid) as the exported model computes them."""
    score, iou, most = thresholds(spec)

    @tf.function(reduce_retracing=True, autograph=False)
    def run(images):
        return decode(model(images, training=False), num_classes, score, iou, most)

    return run


def coco_metrics(truth: list[tuple], found: list[tuple], num_classes: int, height: int, width: int) -> dict:
    """mAP@[.5:.95] ("map"), mAP@0.5 ("map50") and mAP@0.75 ("map75") by pycocotools' COCOeval.

    truth: per image (boxes [k, 4] normalised, class ids [k]); found: per image (boxes, class ids,
    scores). Boxes are measured in pixels of a height x width image."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(box):
        y0, x0, y1, x1 = (float(v) for v in box)
        return [x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height]

    images: list[dict] = []
    annotations: list[dict] = []
    detections: list[dict] = []
    for image_id, ((boxes, kinds), (dboxes, dkinds, dscores)) in enumerate(zip(truth, found, strict=True), 1):
        images.append({"id": image_id, "width": width, "height": height})
        for box, kind in zip(boxes, kinds, strict=True):
            b = xywh(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(kind) + 1,
                    "bbox": b,
                    "area": b[2] * b[3],
                    "iscrowd": 0,
                }
            )
        for box, kind, score in zip(dboxes, dkinds, dscores, strict=True):
            detections.append(
                {"image_id": image_id, "category_id": int(kind) + 1, "bbox": xywh(box), "score": float(score)}
            )
    if not annotations or not detections:
        return {"map": 0.0, "map50": 0.0, "map75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k + 1, "name": str(k)} for k in range(num_classes)],
        }
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [max(float(v), 0.0) for v in evaluator.stats[:3]]  # -1: no ground truth in that bucket
    return {"map": stats[0], "map50": stats[1], "map75": stats[2]}


class DetectionFeed(EpochFeed):
    """EpochFeed for the detector: (images, targets) batches, the targets drawn from each batch's
    boxes after the ops (box_augment moves them) and before the batch is handed to model.fit."""

    def __init__(self, *args, num_classes: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_classes = num_classes
        self.grid = grid(int(self.shape[0]), int(self.shape[1]))

    def gathers(self) -> bool:
        return False  # the boxes travel with the rows: always the batches themselves

    def _pair(self, batch) -> tuple[np.ndarray, np.ndarray]:
        return batch[self.input_name].astype(self.dtype, copy=False), targets(batch, self.grid, self.num_classes)

    def dataset(self) -> tf.data.Dataset:
        signature = (
            tf.TensorSpec([None, *self.shape], self.dtype),
            tf.TensorSpec([None, *self.grid, self.num_classes + 5], tf.float32),
        )
        return (
            tf.data.Dataset.from_generator(self.chunks, output_signature=signature).rebatch(self.batch_size).prefetch(2)
        )


def evaluate(model, plan: Plan, batches: Iterable[dict], subset) -> train_pb2.Evaluation:
    """Evaluation of held-out rows (batches of every tensor, after the deterministic ops) as served:
    the detections of `decode` with the pipeline's thresholds, against the true boxes, by COCOeval."""
    spec, input_name, class_names = plan.spec, plan.input_name, plan.class_names
    run = predict_fn(model, spec, len(class_names))
    truth: list[tuple] = []
    found: list[tuple] = []
    shown: list[np.ndarray] = []
    height = width = 0
    for batch in batches:
        images = batch[input_name]
        if len(shown) < EXAMPLES and images.dtype == np.uint8:
            shown += list(images[: EXAMPLES - len(shown)])
        height, width = int(images.shape[1]), int(images.shape[2])
        boxes, kinds, scores, valid = (t.numpy() for t in run(tf.cast(images, model.inputs[0].dtype)))
        for i in range(len(images)):
            n, v = int(batch["box_count"][i]), int(valid[i])
            truth.append((batch["boxes"][i, :n], batch["box_labels"][i, :n]))
            found.append((boxes[i, :v], kinds[i, :v], scores[i, :v]))
    metrics = coco_metrics(truth, found, len(class_names), height, width)
    evaluation = train_pb2.Evaluation(subset=subset, rows=len(truth), metrics=metrics)
    for image, (boxes, kinds), (dboxes, dkinds, dscores) in zip(shown, truth, found, strict=False):
        evaluation.examples.add(
            image=tf.io.encode_png(image).numpy(),
            truth=[
                train_pb2.Detection(label=class_names[k], score=1.0, box=b.tolist())
                for b, k in zip(boxes, kinds, strict=True)
            ],
            found=[
                train_pb2.Detection(label=class_names[k], score=float(s), box=b.tolist())
                for b, k, s in zip(dboxes, dkinds, dscores, strict=True)
            ],
        )
    return evaluation


def outputs(spec: pipeline_pb2.TrainSpec) -> dict[str, dict]:
    """cookline.json "outputs" of a detector."""
    most = int(spec.max_detections)
    return {
        "boxes": {"dtype": "float32", "shape": [-1, most, 4]},
        "labels": {"dtype": "string", "shape": [-1, most]},
        "scores": {"dtype": "float32", "shape": [-1, most]},
    }


def export(trained: models.Trained, spec: pipeline_pb2.TrainSpec, path: str) -> dict[str, dict]:
    """Writes a SavedModel whose serving_default takes encoded images ("image" string [rows]) and
    returns "boxes" float32 [rows, max_detections, 4] (ymin, xmin, ymax, xmax as fractions of the
    image), "labels" string [rows, max_detections] (class names; "" in unused slots) and "scores"
    float32 [rows, max_detections] (0 in unused slots), best first; returns cookline.json's "inputs".
    The fitted ops run in the model as for the classifiers (models.export); non-max suppression too."""
    from cookline import tensors
    from services.process import ops as ops_lib
    from services.train import models

    model, fitted_ops, fields, class_names = trained.model, trained.fitted_ops, trained.fields, trained.class_names
    inputs = models.raw_inputs(fields, "image", fitted_ops)
    image = inputs["image"]["image"]
    image_dtype = tensors.dtype_name(fields["image"].dtype)
    steps = ops_lib.graph(fitted_ops)
    names = tf.constant(class_names, tf.string)
    score, iou, most = thresholds(spec)
    target = model.inputs[0].dtype

    def serve(data):
        raw = {"image": models.decode_images(data, image["height"], image["width"], image["channels"], image_dtype)}
        maps = model(tf.cast(steps(raw)["image"], target), training=False)
        boxes, kinds, scores, valid = decode(maps, len(class_names), score, iou, most)
        used = tf.range(most)[None, :] < valid[:, None]
        return {"boxes": boxes, "labels": tf.where(used, tf.gather(names, kinds), ""), "scores": scores}

    archive = keras.export.ExportArchive()
    archive.track(model)
    for resource in steps.resources:
        archive.track(resource)
    archive.add_endpoint(
        name="serving_default", fn=serve, input_signature=[tf.TensorSpec([None], tf.string, name="image")]
    )
    archive.write_out(path, verbose=False)
    return inputs
