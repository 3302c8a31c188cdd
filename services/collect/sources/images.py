"""Image sources: a folder of class folders (image-folder) and PascalVOC (voc).

Both yield "image" uint8 [n, height, width, channels] and "label" int32 [n];
image-folder with train/, validation/, test/ folders also yields "subset"
(a predefined split). Images are decoded one at a time with Pillow, so memory
holds one chunk of decoded images.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from cookline.spec.sources import check_image_options, walk_files
from cookline.v1 import data_pb2
from services.collect.sources.base import Chunk, Labels, Source, open_binary
from services.common.errors import invalid, not_found

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLIT_FOLDERS = {"train": data_pb2.SUBSET_TRAIN, "validation": data_pb2.SUBSET_VALIDATION, "test": data_pb2.SUBSET_TEST}
IMAGES_PER_CHUNK = 256


class _ImageDecoder:
    """Decodes files to uint8 [h, w, c] arrays of one shape and one color mode."""

    def __init__(self, spec):
        check_image_options(spec.color, spec.image_size)
        self.color = spec.color
        self.size = tuple(int(v) for v in spec.image_size)
        self.shape: tuple[int, ...] | None = None
        self.source_shapes: dict[str, int] = {}

    def decode(self, name: str, path: str) -> np.ndarray:
        try:
            with open_binary(path) as f, Image.open(f) as img:
                img.load()
                if not self.color:
                    self.color = "grayscale" if img.mode in ("L", "1", "I", "I;16", "F") else "rgb"
                channels = len(img.getbands())
                self.source_shapes[f"{img.height}x{img.width}x{channels}"] = (
                    self.source_shapes.get(f"{img.height}x{img.width}x{channels}", 0) + 1
                )
                pixels = img.convert("L" if self.color == "grayscale" else "RGB")
                if self.size:
                    pixels = pixels.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(pixels, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise invalid(f"collect.source: {name} is not a readable PNG or JPEG image ({exc})") from None
        if array.ndim == 2:
            array = array[:, :, None]
        if self.shape is None:
            self.shape = array.shape
        elif array.shape != self.shape:
            raise invalid(
                f"collect.source: {name} is {array.shape[0]}x{array.shape[1]}, but earlier images are "
                f"{self.shape[0]}x{self.shape[1]}; set collect.image_size to resize them all"
            )
        return array


def _chunks(items, decoder: _ImageDecoder, labels: Labels) -> Iterator[Chunk]:
    """items: (name, path, class name, subset or None) -> chunks of decoded images."""
    images, ids, subsets = [], [], []
    for name, path, class_name, subset in items:
        images.append(decoder.decode(name, path))
        ids.append(labels.id(class_name))
        subsets.append(subset)
        if len(images) == IMAGES_PER_CHUNK:
            yield _chunk(images, ids, subsets)
            images, ids, subsets = [], [], []
    if images:
        yield _chunk(images, ids, subsets)


def _chunk(images, ids, subsets) -> Chunk:
    chunk = {"image": np.stack(images), "label": np.asarray(ids, dtype=np.int32)}
    if subsets[0] is not None:
        chunk["subset"] = np.asarray(subsets, dtype=np.uint8)
    return chunk


class ImageFolderSource(Source):
    """root/<class>/*.png|jpg, or root/{train,validation,test}/<class>/*.png|jpg."""

    format = "image-folder"

    def __init__(self, spec, path: str):
        if not os.path.isdir(path):
            raise invalid(f"collect.source: {path!r} is not a folder (image-folder needs one folder per class)")
        self.root = path
        self.decoder = _ImageDecoder(spec)
        self.items = []
        tops = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
        self.predefined_split = bool(tops) and set(tops) <= set(SPLIT_FOLDERS)
        for rel, full in walk_files(path):
            parts = rel.split("/")
            if not rel.lower().endswith(IMAGE_EXTENSIONS):
                continue
            depth = 3 if self.predefined_split else 2
            if len(parts) != depth:
                raise invalid(
                    f"collect.source: {rel} is not inside a class folder "
                    f"({'<split>/' if self.predefined_split else ''}<class>/<image>)"
                )
            subset = SPLIT_FOLDERS[parts[0]] if self.predefined_split else None
            self.items.append((rel, full, parts[-2], subset))
        if not self.items:
            raise invalid(f"collect.source: {path!r} has no PNG or JPEG images in class folders")
        # Class ids follow the sorted class folder names, whatever order the files come in.
        self.labels = Labels(sorted({item[2] for item in self.items}))
        self.class_names = self.labels.names

    @property
    def image_shapes(self):
        return self.decoder.source_shapes

    def files(self):
        return [(name, path) for name, path, _, _ in self.items]

    def chunks(self) -> Iterator[Chunk]:
        return _chunks(self.items, self.decoder, self.labels)


class VocSource(Source):
    """PascalVOC: annotations/*.xml (filename, object/name) + images/<filename>."""

    format = "voc"

    def __init__(self, spec, path: str):
        annotations = os.path.join(path, "annotations")
        images = os.path.join(path, "images")
        for folder in (annotations, images):
            if not os.path.isdir(folder):
                raise invalid(
                    f"collect.source: {path!r} has no {os.path.basename(folder)}/ folder (voc needs "
                    f"annotations/*.xml and images/)"
                )
        self.decoder = _ImageDecoder(spec)
        self.items = []
        self.xml_files = []
        for rel, full in walk_files(annotations):
            if not rel.lower().endswith(".xml"):
                continue
            name = "annotations/" + rel
            self.xml_files.append((name, full))
            try:
                with open_binary(full) as f:
                    root = ET.parse(f).getroot()
            except ET.ParseError as exc:
                raise invalid(f"collect.source: {name} is not valid XML ({exc})") from None
            file_name = (root.findtext("filename") or "").strip()
            label = (root.findtext("object/name") or "").strip()
            if not file_name:
                raise invalid(f"collect.source: {name} has no <filename>")
            if not label:
                raise invalid(f"collect.source: {name} has no <object><name> (the class label)")
            image = os.path.join(images, file_name)
            if os.path.basename(file_name) != file_name or not os.path.isfile(image):
                raise not_found(f"collect.source: images/{file_name} named by {name} not found")
            self.items.append(("images/" + file_name, image, label, None))
        if not self.items:
            raise invalid(f"collect.source: {annotations!r} has no .xml annotations")
        self.labels = Labels(sorted({item[2] for item in self.items}))
        self.class_names = self.labels.names

    @property
    def image_shapes(self):
        return self.decoder.source_shapes

    def files(self):
        return self.xml_files + [(name, path) for name, path, _, _ in self.items]

    def chunks(self) -> Iterator[Chunk]:
        return _chunks(self.items, self.decoder, self.labels)
