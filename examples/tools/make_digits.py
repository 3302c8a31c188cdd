"""Writes examples/data/digits/<class>/<index>.png: scikit-learn's handwritten digits
(load_digits: 1797 8x8 images, 16 grey levels) as 8-bit grayscale PNGs, one folder per class.

The PNG set is committed; this regenerates it (needs the `examples` extra):
    make examples-data
"""

import os

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def main(root: str) -> None:
    digits = load_digits()
    for i, (image, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        folder = os.path.join(root, str(target))
        os.makedirs(folder, exist_ok=True)
        pixels = np.clip(np.rint(image * 255 / 16), 0, 255).astype(np.uint8)  # 0..16 -> 0..255
        Image.fromarray(pixels, mode="L").save(os.path.join(folder, f"{i:04d}.png"), optimize=True)


if __name__ == "__main__":
    main(os.path.join(os.path.dirname(__file__), "..", "data", "digits"))
