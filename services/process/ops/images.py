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


class RandomFlip(_Augmentation):
    name = "random_flip"

    def augment(self, op, image, draws):
        mode = self.settings(op, self.name)["mode"]
        out = image.copy()
        if mode in ("horizontal", "both"):
            flip = draws.random(len(image)) < 0.5
            out[flip] = out[flip][:, :, ::-1]
        if mode in ("vertical", "both"):
            flip = draws.random(len(image)) < 0.5
            out[flip] = out[flip][:, ::-1]
        return out


class RandomRotation(_Augmentation):
    name = "random_rotation"

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
