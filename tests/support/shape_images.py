"""Generated image folders of outlined shapes in noisy, cluttered scenes, for the transfer-learning test.

Every image is a 32x32 grayscale PNG: one shape's outline (random size, position and stroke
width) among short distractor strokes, under Gaussian noise and a random brightness. A `cnn`
trained on many circles, squares and triangles learns stroke, corner and curve detectors that
survive the noise; two new shapes (ellipses and diamonds) are then told apart from 40 images
each far better from those detectors than from scratch. Seeded: the same call writes the same
files.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw

SIZE = 32
_SCALE = 4  # drawn at 4x and downsampled: antialiased strokes
NOISE = 50.0  # standard deviation of the pixel noise (of 255)


def draw(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One [SIZE, SIZE] uint8 image of `kind`: circle, square, triangle, ellipse or diamond."""
    big = SIZE * _SCALE
    image = Image.new("L", (big, big), 0)
    pen = ImageDraw.Draw(image)
    for _ in range(3):  # clutter: short strokes anywhere
        x0, y0 = rng.uniform(0, big, 2)
        angle, length = rng.uniform(0, np.pi), rng.uniform(4, 10) * _SCALE
        end = (x0 + length * np.cos(angle), y0 + length * np.sin(angle))
        pen.line([x0, y0, *end], fill=int(rng.uniform(120, 255)), width=int(rng.integers(4, 8)))
    r = rng.uniform(6, 11) * _SCALE
    cx, cy = rng.uniform(r + 4, big - r - 4, size=2)
    width = int(rng.integers(5, 9))
    if kind == "circle":
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], outline=255, width=width)
    elif kind == "square":
        pen.rectangle([cx - r, cy - r, cx + r, cy + r], outline=255, width=width)
    elif kind == "triangle":
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], outline=255, width=width)
    elif kind == "ellipse":
        pen.ellipse([cx - r, cy - r * 0.6, cx + r, cy + r * 0.6], outline=255, width=width)
    elif kind == "diamond":
        pen.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], outline=255, width=width)
    else:
        raise ValueError(f"unknown shape {kind!r}")
    pixels = np.asarray(image.resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32)
    pixels = pixels * rng.uniform(0.6, 1.0) + rng.normal(0, NOISE, pixels.shape) + rng.uniform(0, 60)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_folder(root: str, per_class: dict[str, int], seed: int) -> str:
    """root/<shape>/<i>.png for each shape and count; returns root."""
    rng = np.random.default_rng(seed)
    for kind, count in per_class.items():
        folder = os.path.join(root, kind)
        os.makedirs(folder, exist_ok=True)
        for i in range(count):
            Image.fromarray(draw(kind, rng)).save(os.path.join(folder, f"{i:04d}.png"))
    return root
