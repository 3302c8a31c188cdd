"""Image ops on "image" ([n, height, width, channels], uint8 or float): resize and grayscale
(deterministic, built into the exported model) and the random augmentations random_flip,
random_rotation and random_brightness (TRAIN subset only, drawn afresh every epoch from
(seed, epoch, op position))."""

from __future__ import annotations

import numpy as np

from services.common.errors import invalid
from services.process.ops.base import OpKind, graph_fn, need, rng

LUMA = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)  # ITU-R 601, as tf.image.rgb_to_grayscale


def _images(batch, where) -> np.ndarray:
    image = need(batch, "image", where)
    if image.ndim != 4:
        raise invalid(f"{where}: 'image' has shape {list(image.shape)}, expected [rows, height, width, channels]")
    return image


def _like(result: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Back to the input's dtype (rounded and clipped for integer pixels)."""
    if original.dtype.kind in "ui":
        info = np.iinfo(original.dtype)
        return np.clip(np.rint(result), info.min, info.max).astype(original.dtype)
    return result.astype(original.dtype, copy=False)


def _axis(out_size, in_size):
    """Source rows (or columns) and weights of a bilinear resize along one axis."""
    centers = (np.arange(out_size, dtype=np.float32) + 0.5) * (in_size / out_size) - 0.5
    centers = np.clip(centers, 0, in_size - 1)
    lo = np.floor(centers).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, (centers - lo).astype(np.float32)


def resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with half-pixel centers, as tf.image.resize(method="bilinear", antialias=False)."""
    n, h, w, c = images.shape
    if (h, w) == (height, width):
        return images
    x = images.astype(np.float32, copy=False)
    y0, y1, fy = _axis(height, h)
    x0, x1, fx = _axis(width, w)
    top = x[:, y0][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y0][:, :, x1] * fx[None, None, :, None]
    bottom = x[:, y1][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y1][:, :, x1] * fx[None, None, :, None]
    return _like(top * (1 - fy)[None, :, None, None] + bottom * fy[None, :, None, None], images)


def graph_like(result, dtype):
    """_like in TensorFlow: rounded (half to even, as np.rint) and clipped for integer pixels."""
    import tensorflow as tf

    if dtype.is_integer:
        return tf.cast(tf.clip_by_value(tf.round(result), dtype.min, dtype.max), dtype)
    return tf.cast(result, dtype)


def graph_resize(images, height: int, width: int):
    """resize_bilinear in TensorFlow, the same float32 arithmetic in the same order (so the same
    pixels): images [rows, h, w, c] with a known h and w."""
    import tensorflow as tf

    h, w = int(images.shape[1]), int(images.shape[2])
    if (h, w) == (height, width):
        return images
    x = tf.cast(images, tf.float32)
    y0, y1, fy = _axis(height, h)
    x0, x1, fx = _axis(width, w)
    fx, fy = fx[None, None, :, None], fy[None, :, None, None]
    rows0, rows1 = tf.gather(x, y0, axis=1), tf.gather(x, y1, axis=1)
    top = tf.gather(rows0, x0, axis=2) * (1 - fx) + tf.gather(rows0, x1, axis=2) * fx
    bottom = tf.gather(rows1, x0, axis=2) * (1 - fx) + tf.gather(rows1, x1, axis=2) * fx
    return graph_like(top * (1 - fy) + bottom * fy, images.dtype)


class Resize(OpKind):
    name = "resize"

    def graph(self, op, where):
        return graph_fn(lambda t: {**t, "image": graph_resize(t["image"], int(op.resize.height), int(op.resize.width))})

    def apply(self, op, where, batches, epoch, training):
        for batch in batches:
            yield {
                **batch,
                "image": resize_bilinear(_images(batch, where), int(op.resize.height), int(op.resize.width)),
            }


class Grayscale(OpKind):
    name = "grayscale"

    def apply(self, op, where, batches, epoch, training):
        for batch in batches:
            image = _images(batch, where)
            if image.shape[3] == 1:
                yield batch
                continue
            if image.shape[3] not in (3, 4):
                raise invalid(f"{where}: 'image' has {image.shape[3]} channels, expected 1, 3 or 4")
            x = image.astype(np.float32)
            gray = x[..., 0] * LUMA[0] + x[..., 1] * LUMA[1] + x[..., 2] * LUMA[2]  # the order graph() uses
            yield {**batch, "image": _like(gray[..., None], image)}

    def graph(self, op, where):
        import tensorflow as tf

        def fn(t):
            image = t["image"]
            if image.shape[3] == 1:
                return t
            x = tf.cast(image, tf.float32)
            gray = x[..., 0] * LUMA[0] + x[..., 1] * LUMA[1] + x[..., 2] * LUMA[2]
            return {**t, "image": graph_like(gray[..., None], image.dtype)}

        return graph_fn(fn)


class _Augmentation(OpKind):
    def apply(self, op, where, batches, epoch, training):
        if not training:
            yield from batches
            return
        draws = rng(self.params(op).seed, epoch, int(where.split("[")[1].split("]")[0]))
        for batch in batches:
            image = _images(batch, where)
            yield {**batch, "image": self.augment(op, image, draws)}

    def augment(self, op, image, draws):
        raise NotImplementedError


def _flip_boxes(boxes: np.ndarray, counts: np.ndarray, rows: np.ndarray, axis: int) -> None:
    """Mirrors the used boxes of `rows` in place: axis 1 flips x (xmin, xmax), axis 0 flips y."""
    lo, hi = (1, 3) if axis == 1 else (0, 2)
    for i in np.flatnonzero(rows):
        used = boxes[i, : counts[i]]
        used[:, lo], used[:, hi] = 1.0 - used[:, hi], 1.0 - used[:, lo].copy()


class RandomFlip(_Augmentation):
    """Flips images; detection data's boxes ("boxes", with "box_count") move with them."""

    name = "random_flip"

    def apply(self, op, where, batches, epoch, training):
        if not training:
            yield from batches
            return
        draws = rng(self.params(op).seed, epoch, int(where.split("[")[1].split("]")[0]))
        mode = self.settings(op, where)["mode"]
        for batch in batches:
            image = _images(batch, where)
            out, boxes = image.copy(), None
            if "boxes" in batch:
                boxes, counts = batch["boxes"].copy(), need(batch, "box_count", where)
            for axis, modes in ((2, ("horizontal", "both")), (1, ("vertical", "both"))):
                if mode in modes:
                    flip = draws.random(len(image)) < 0.5
                    out[flip] = np.flip(out[flip], axis=axis)
                    if boxes is not None:
                        _flip_boxes(boxes, counts, flip, 1 if axis == 2 else 0)
            yield {**batch, "image": out} if boxes is None else {**batch, "image": out, "boxes": boxes}


# A box keeps at least this fraction of its area inside the image after box_augment, or is dropped.
MIN_KEPT_AREA = 0.25


class BoxAugment(_Augmentation):
    """Flips and rescales each training image with its boxes (detection data: "boxes", "box_labels",
    "box_count"). Scaling by s < 1 shrinks the scene into a canvas of the image's size, filled with
    its mean colour; s > 1 enlarges it and keeps a random window. Boxes move with the pixels; a box
    with less than MIN_KEPT_AREA of its area left inside is dropped (the rest close up)."""

    name = "box_augment"

    def apply(self, op, where, batches, epoch, training):
        if not training:
            yield from batches
            return
        draws = rng(self.params(op).seed, epoch, int(where.split("[")[1].split("]")[0]))
        settings = self.settings(op, where)
        for batch in batches:
            image = _images(batch, where)
            boxes, labels, counts = (need(batch, n, where) for n in ("boxes", "box_labels", "box_count"))
            out_images, out_boxes = np.empty_like(image), np.zeros_like(boxes)
            out_labels, out_counts = np.full_like(labels, -1), np.zeros_like(counts)
            for i in range(len(image)):
                pixels, used = image[i], boxes[i, : counts[i]].astype(np.float64)
                kinds = labels[i, : counts[i]]
                if settings["flip"] in ("horizontal", "both") and draws.random() < 0.5:
                    pixels, used = pixels[:, ::-1], used[:, [0, 3, 2, 1]] * [1, -1, 1, -1] + [0, 1, 0, 1]
                if settings["flip"] in ("vertical", "both") and draws.random() < 0.5:
                    pixels, used = pixels[::-1], used[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [1, 0, 1, 0]
                pixels, used = self._rescale(
                    pixels, used, draws.uniform(settings["min_scale"], settings["max_scale"]), draws
                )
                out_images[i] = pixels
                kept = np.clip(used, 0, 1)
                area = lambda b: np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)  # noqa: E731 - local helper
                keep = (area(kept) > 0) & (area(kept) >= MIN_KEPT_AREA * area(used))
                n = int(keep.sum())
                out_boxes[i, :n], out_labels[i, :n], out_counts[i] = kept[keep], kinds[keep], n
            yield {**batch, "image": out_images, "boxes": out_boxes, "box_labels": out_labels, "box_count": out_counts}

    @staticmethod
    def _rescale(pixels: np.ndarray, boxes: np.ndarray, scale: float, draws) -> tuple[np.ndarray, np.ndarray]:
        """The image scaled by `scale` about a random point, at its own size, and its boxes moved."""
        h, w = pixels.shape[:2]
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        if (nh, nw) == (h, w):
            return pixels, boxes
        resized = resize_bilinear(np.ascontiguousarray(pixels)[None], nh, nw)[0]
        if nh <= h and nw <= w:
            oy, ox = int(draws.integers(0, h - nh + 1)), int(draws.integers(0, w - nw + 1))
            canvas = np.empty_like(pixels)
            canvas[...] = _like(pixels.reshape(-1, pixels.shape[2]).mean(axis=0), pixels)
            canvas[oy : oy + nh, ox : ox + nw] = resized
            dy, dx = oy, ox
        else:
            nh, nw = max(nh, h), max(nw, w)
            resized = resize_bilinear(np.ascontiguousarray(pixels)[None], nh, nw)[0]
            oy, ox = int(draws.integers(0, nh - h + 1)), int(draws.integers(0, nw - w + 1))
            canvas, dy, dx = resized[oy : oy + h, ox : ox + w], -oy, -ox
        moved = boxes * [nh / h, nw / w, nh / h, nw / w] + [dy / h, dx / w, dy / h, dx / w]
        return canvas, moved


class RandomRotation(_Augmentation):
    name = "random_rotation"

    def apply(self, op, where, batches, epoch, training):
        for batch in super().apply(op, where, batches, epoch, training):
            if training and "boxes" in batch:
                raise invalid(f"{where}: does not move boxes; use box_augment on detection data")
            yield batch

    def augment(self, op, image, draws):
        n, h, w, _ = image.shape
        angles = np.deg2rad(draws.uniform(-op.random_rotation.max_degrees, op.random_rotation.max_degrees, n))
        yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
        out = np.zeros_like(image)
        for i, a in enumerate(angles):  # inverse mapping, nearest neighbour, zero fill
            cos, sin = np.cos(a), np.sin(a)
            src_y = np.rint(cos * yy - sin * xx + (h - 1) / 2).astype(np.int64)
            src_x = np.rint(sin * yy + cos * xx + (w - 1) / 2).astype(np.int64)
            inside = (src_y >= 0) & (src_y < h) & (src_x >= 0) & (src_x < w)
            out[i][inside] = image[i][src_y[inside], src_x[inside]]
        return out


class RandomBrightness(_Augmentation):
    name = "random_brightness"

    def augment(self, op, image, draws):
        full = 255.0 if image.dtype.kind in "ui" else 1.0
        delta = draws.uniform(-op.random_brightness.max_delta, op.random_brightness.max_delta, len(image)) * full
        shifted = image.astype(np.float32) + delta[:, None, None, None].astype(np.float32)
        return _like(np.clip(shifted, 0, full), image)
