"""Writes a small PascalVOC data set of shapes for object detection: noisy 64x64 scenes, each with
one to three circles, squares and triangles of random size and colour, and one annotation file per
scene (annotations/<n>.xml with every object's name and bndbox, images/<n>.png).

Deterministic (seeded); examples/shapes-detect.yaml trains on its default output:
    .venv/bin/python examples/tools/make_shapes_voc.py                  # -> examples/data/shapes
    .venv/bin/python examples/tools/make_shapes_voc.py --out DIR --scenes 300 --size 64
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")


def _free(box, taken, slack: int = 2) -> bool:
    """True when `box` (x0, y0, x1, y1) does not overlap any box in `taken` (with some slack)."""
    x0, y0, x1, y1 = box
    return all(x1 + slack <= a or a2 + slack <= x0 or y1 + slack <= b or b2 + slack <= y0 for a, b, a2, b2 in taken)


def scene(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[tuple[str, tuple[int, int, int, int]]]]:
    """One noisy scene and its objects: (class name, (xmin, ymin, xmax, ymax) in pixel edges)."""
    base = rng.integers(40, 200, size=3)
    pixels = base[None, None, :] + rng.normal(0, 18, size=(size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    objects: list[tuple[str, tuple[int, int, int, int]]] = []
    taken: list[tuple[int, int, int, int]] = []
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(20):
            side = int(rng.integers(size // 5, size * 2 // 5 + 1))
            x0, y0 = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
            box = (x0, y0, x0 + side, y0 + side)
            if _free(box, taken):
                break
        else:
            continue
        name = CLASSES[int(rng.integers(len(CLASSES)))]
        colour = tuple(int(v) for v in (base + rng.choice([-1, 1], size=3) * rng.integers(70, 120, size=3)) % 256)
        x1, y1 = box[2] - 1, box[3] - 1  # PIL draws inclusive of the end pixel
        if name == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif name == "square":
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=colour)
        taken.append(box)
        objects.append((name, box))
    return image, objects


def annotation(file_name: str, size: int, objects) -> str:
    parts = [f"<annotation><filename>{file_name}</filename>"]
    parts.append(f"<size><width>{size}</width><height>{size}</height><depth>3</depth></size>")
    for name, (x0, y0, x1, y1) in objects:
        parts.append(
            f"<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        )
    parts.append("</annotation>\n")
    return "".join(parts)


def write(out: str, scenes: int = 300, size: int = 64, seed: int = 5) -> str:
    """Writes the data set into `out` (annotations/ and images/); returns `out`."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(out, "annotations"), exist_ok=True)
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    for i in range(scenes):
        image, objects = scene(rng, size)
        while not objects:  # every scene has at least one object
            image, objects = scene(rng, size)
        file_name = f"{i:04d}.png"
        image.save(os.path.join(out, "images", file_name))
        with open(os.path.join(out, "annotations", f"{i:04d}.xml"), "w") as f:
            f.write(annotation(file_name, size, objects))
    return out


def main() -> None:
    default = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "shapes")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=default, help="folder to write (default: examples/data/shapes)")
    parser.add_argument("--scenes", type=int, default=300, help="how many scenes (default 300)")
    parser.add_argument("--size", type=int, default=64, help="side of each scene in pixels (default 64)")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    print(write(args.out, args.scenes, args.size, args.seed))


if __name__ == "__main__":
    main()
