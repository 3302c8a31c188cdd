"""Image sources: a folder of class folders (image-folder), PascalVOC (voc) and COCO JSON (coco).

All yield "image" uint8 [n, height, width, channels] and "label" int32 [n];
image-folder with train/, validation/, test/ folders also yields "subset"
(a predefined split); voc and coco add every object's box and class (_DetectionSource).
Images are decoded with Pillow (8-bit PNGs without a palette by libspng: the same values at less
than half the cost) on DECODE_THREADS threads, in file order: the first image alone (it fixes the
color mode), then at most DECODE_AHEAD images in flight, so memory holds about one chunk of decoded
images beyond the chunk being written. Checks that depend on order (one shape for all, the first
failing file named) run as the images come back.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import xml.etree.ElementTree as ET
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyspng
from PIL import Image, UnidentifiedImageError

from cookline.spec.sources import check_image_options, walk_files
from cookline.v1 import data_pb2
from services.collect.sources.base import Chunk, Labels, Source, open_binary
from services.common.errors import invalid, not_found

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLIT_FOLDERS = {"train": data_pb2.SUBSET_TRAIN, "validation": data_pb2.SUBSET_VALIDATION, "test": data_pb2.SUBSET_TEST}
IMAGES_PER_CHUNK = 256
# Decoding threads. Much of decoding holds the GIL (Pillow's parsing in Python, libspng), so they
# mostly overlap reading and decoding with the shards and statistics of the ingest's own thread, and
# a larger machine gains little from more.
DECODE_THREADS = min(4, max(2, len(os.sched_getaffinity(0))))
# Images decoded ahead of the one being consumed: one chunk's worth, in tasks of DECODE_BATCH images
# (one hand-over between threads per image costs more than the decoding on a busy machine).
DECODE_AHEAD = IMAGES_PER_CHUNK
DECODE_BATCH = 32
# PNG color types whose 8-bit samples libspng decodes (_plain_png), as Pillow's modes.
PNG_MODES = {0: "L", 2: "RGB", 4: "LA", 6: "RGBA"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _ImageDecoder:
    """Decodes files to uint8 [h, w, c] arrays of one shape and one color mode."""

    def __init__(self, spec):
        check_image_options(spec.color, spec.image_size)
        self.color = spec.color
        self.size = tuple(int(v) for v in spec.image_size)
        self.shape: tuple[int, ...] | None = None
        self.source_shapes: dict[str, int] = {}

    def decode(self, name: str, path: str) -> np.ndarray:
        """One image, checked against the images before it."""
        return self._accept(name, *self._read(name, path))

    def decode_all(self, files: Iterable[tuple[str, str]]) -> Iterator[np.ndarray]:
        """decode() of every (name, path), in order, the files read and decoded DECODE_BATCH at a time
        on DECODE_THREADS threads: the first error in file order is the one raised, as one at a time
        would."""
        files = iter(files)
        first = next(files, None)
        if first is None:
            return
        yield self.decode(*first)  # before any thread: it sets the color mode when none is given
        pending: deque[tuple[list[tuple[str, str]], Future]] = deque()
        with ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="collect-decode") as pool:
            try:
                while batch := list(itertools.islice(files, DECODE_BATCH)):
                    pending.append((batch, pool.submit(self._read_batch, batch)))
                    if len(pending) * DECODE_BATCH > DECODE_AHEAD:
                        yield from self._accept_batch(*pending.popleft())
                while pending:
                    yield from self._accept_batch(*pending.popleft())
            finally:  # an error or a closed generator (a cancelled ingest): nothing more is decoded
                for _, future in pending:
                    future.cancel()

    def _read_batch(self, batch: list[tuple[str, str]]) -> list:
        """_read() of each file, up to the first that fails: its exception ends the list."""
        out: list = []
        for name, path in batch:
            try:
                out.append(self._read(name, path))
            except Exception as exc:  # whatever it is, raised in file order by _accept_batch
                out.append(exc)
                break
        return out

    def _accept_batch(self, batch: list[tuple[str, str]], future: Future) -> Iterator[np.ndarray]:
        for (name, _), outcome in zip(batch, future.result(), strict=False):
            if isinstance(outcome, Exception):
                raise outcome
            yield self._accept(name, *outcome)

    def _read(self, name: str, path: str) -> tuple[np.ndarray, str]:
        """The pixels of one file and its source shape ("HxWxC"); reads no state but the color mode."""
        try:
            with open_binary(path) as f:
                plain = _plain_png(f)
                if plain is not None:
                    samples, source_mode = plain
                    color = self.color or ("grayscale" if source_mode == "L" else "rgb")
                    source_shape = f"{samples.shape[0]}x{samples.shape[1]}x{len(source_mode)}"
                    mode = "L" if color == "grayscale" else "RGB"
                    if source_mode == mode and (not self.size or self.size == samples.shape[:2]):
                        array = samples  # what convert() and resize() would copy unchanged
                    else:
                        array = self._converted(Image.fromarray(samples), mode)
                else:
                    f.seek(0)
                    with Image.open(f) as img:
                        img.load()
                        color = self.color or ("grayscale" if img.mode in ("L", "1", "I", "I;16", "F") else "rgb")
                        source_shape = f"{img.height}x{img.width}x{len(img.getbands())}"
                        array = self._converted(img, "L" if color == "grayscale" else "RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise invalid(f"collect.source: {name} is not a readable PNG or JPEG image ({exc})") from None
        if not self.color:
            self.color = color
        return array, source_shape

    def _converted(self, img: Image.Image, mode: str) -> np.ndarray:
        pixels = img.convert(mode)
        if self.size:
            pixels = pixels.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        return np.asarray(pixels, dtype=np.uint8)

    def _accept(self, name: str, array: np.ndarray, source_shape: str) -> np.ndarray:
        """Counts the source shape and checks the decoded shape against the earlier images'."""
        self.source_shapes[source_shape] = self.source_shapes.get(source_shape, 0) + 1
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


def _plain_png(f) -> tuple[np.ndarray, str] | None:
    """(pixels, Pillow's mode) of an 8-bit PNG without a palette (mode L, LA, RGB or RGBA), decoded by
    libspng without Pillow's open: the values Pillow gives, at less than half its cost. Checked first
    as Pillow's open checks it (signature, IHDR, the pixel limit) and further (every chunk whole and
    matching its CRC). None for any other file, or any doubt: Pillow then opens and decodes it, and
    names the fault of a damaged one."""
    head = f.read(33)  # signature and IHDR: a JPEG or another PNG is not read further here
    if len(head) < 33 or head[:8] != PNG_SIGNATURE or head[8:16] != b"\x00\x00\x00\rIHDR":
        return None
    width, height, depth, color_type, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", head, 16)
    mode = PNG_MODES.get(color_type)
    if mode is None or depth != 8 or compression or filtering or interlace > 1 or not width or not height:
        return None  # a palette, 16-bit or 1/2/4-bit samples, or a header Pillow refuses
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        return None  # Pillow's decompression-bomb warning or error
    data = head + f.read()
    if not _chunks_intact(data):
        return None
    try:
        samples = pyspng.load(data)
    except (RuntimeError, ValueError):
        return None
    channels = samples.shape[2] if samples.ndim == 3 else 1
    if samples.dtype != np.uint8 or samples.shape[:2] != (height, width) or channels != len(mode):
        return None
    return samples, mode


def _chunks_intact(data: bytes) -> bool:
    """True when every chunk of a PNG up to IEND is whole and matches its CRC. libspng is used without
    CRC (nor zlib Adler-32) checks, so a damaged file must not reach it: Pillow decodes those and
    refuses the ones its zlib finds broken, as before libspng was used."""
    at = 8  # past the signature
    while at + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        end = at + 8 + length
        if end + 4 > len(data):
            return False
        if zlib.crc32(memoryview(data)[at + 4 : end]) != struct.unpack_from(">I", data, end)[0]:
            return False
        if kind == b"IEND":
            return True
        at = end + 4
    return False


def _chunks(items: list[tuple], decoder: _ImageDecoder, labels: Labels) -> Iterator[Chunk]:
    """items: (name, path, class name, subset or None) -> chunks of decoded images. A list: it is
    walked twice at once (the decoder's files ahead, the labels in step)."""
    images, ids, subsets = [], [], []
    decoded = decoder.decode_all((name, path) for name, path, _, _ in items)
    for (_, _, class_name, subset), image in zip(items, decoded, strict=True):
        images.append(image)
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


def _pixel_size(name: str, path: str) -> tuple[int, int]:
    """(width, height) of an image file, from its header (nothing decoded)."""
    try:
        with open_binary(path) as f, Image.open(f) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise invalid(f"collect.source: {name} is not a readable PNG or JPEG image ({exc})") from None


def _normalised(where: str, box: tuple[float, float, float, float], width: int, height: int) -> list[float]:
    """A pixel box (xmin, ymin, xmax, ymax), 0 <= xmin < xmax <= width and the same for y, as
    [ymin, xmin, ymax, xmax] fractions of the image; INVALID_ARGUMENT naming `where` otherwise."""
    xmin, ymin, xmax, ymax = box
    if not all(np.isfinite(v) for v in box):
        raise invalid(f"{where}: the box has a coordinate that is not a finite number")
    if not (0 <= xmin < xmax <= width and 0 <= ymin < ymax <= height):
        raise invalid(
            f"{where}: the box (xmin {xmin:g}, ymin {ymin:g}, xmax {xmax:g}, ymax {ymax:g}) is empty or "
            f"outside the {width}x{height} image"
        )
    return [ymin / height, xmin / width, ymax / height, xmax / width]


class _DetectionSource(Source):
    """A source of images with boxes. Its chunks have "image", "label" (the first object's class:
    image classifiers train on the same data), and the boxes (cookline.spec.train.DETECTION_TENSORS):
    "boxes" float32 [n, max_boxes, 4] (ymin, xmin, ymax, xmax as fractions of the image's height
    and width, so resizing the image keeps them), "box_labels" int32 [n, max_boxes] (class ids into
    the label's class names; -1 pads) and "box_count" int32 [n], where max_boxes is the most objects
    one image of the source has. Every box is checked when the source opens, before anything is written."""

    decoder: _ImageDecoder

    def _setup(self, items: list[tuple[str, str, list[str], list[list[float]]]], class_names: list[str]) -> None:
        """items: (image name, path, class names of its objects, normalised boxes)."""
        self.labels = Labels(class_names)
        self.class_names = self.labels.names
        self.items = items
        self.max_boxes = max(len(boxes) for _, _, _, boxes in items)

    @property
    def image_shapes(self):
        return self.decoder.source_shapes

    def chunks(self) -> Iterator[Chunk]:
        rows: list[tuple] = []
        images: list[np.ndarray] = []
        decoded = self.decoder.decode_all((name, path) for name, path, _, _ in self.items)
        for item, image in zip(self.items, decoded, strict=True):
            rows.append(item)
            images.append(image)
            if len(rows) == IMAGES_PER_CHUNK:
                yield self._chunk(rows, images)
                rows, images = [], []
        if rows:
            yield self._chunk(rows, images)

    def _chunk(self, rows, images) -> Chunk:
        n = len(rows)
        boxes = np.zeros((n, self.max_boxes, 4), np.float32)
        box_labels = np.full((n, self.max_boxes), -1, np.int32)
        counts = np.zeros(n, np.int32)
        for i, (_, _, names, coords) in enumerate(rows):
            boxes[i, : len(coords)] = coords
            box_labels[i, : len(names)] = [self.labels.ids[c] for c in names]
            counts[i] = len(coords)
        return {
            "image": np.stack(images),
            "label": box_labels[:, 0].copy(),
            "boxes": boxes,
            "box_labels": box_labels,
            "box_count": counts,
        }


class VocSource(_DetectionSource):
    """PascalVOC: annotations/*.xml (filename, object/name, object/bndbox) + images/<filename>."""

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
        items = []
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
            if not file_name:
                raise invalid(f"collect.source: {name} has no <filename>")
            objects = root.findall("object")
            if not objects:
                raise invalid(f"collect.source: {name} has no <object> (every image needs at least one)")
            image = os.path.join(images, file_name)
            if os.path.basename(file_name) != file_name or not os.path.isfile(image):
                raise not_found(f"collect.source: images/{file_name} named by {name} not found")
            width, height = _pixel_size("images/" + file_name, image)
            names, boxes = [], []
            for k, obj in enumerate(objects):
                where = f"collect.source: {name} <object> {k + 1}"
                label = (obj.findtext("name") or "").strip()
                if not label:
                    raise invalid(f"{where} has no <name> (the class label)")
                coords: list[float] = []
                for tag in ("xmin", "ymin", "xmax", "ymax"):
                    text = (obj.findtext(f"bndbox/{tag}") or "").strip()
                    try:
                        coords.append(float(text))
                    except ValueError:
                        raise invalid(f"{where} <bndbox><{tag}>: {text!r} is not a number") from None
                names.append(label)
                xmin, ymin, xmax, ymax = coords
                boxes.append(_normalised(f"{where} <bndbox>", (xmin, ymin, xmax, ymax), width, height))
            items.append(("images/" + file_name, image, names, boxes))
        if not items:
            raise invalid(f"collect.source: {annotations!r} has no .xml annotations")
        self._setup(items, sorted({c for _, _, names, _ in items for c in names}))

    def files(self):
        return self.xml_files + [(name, path) for name, path, _, _ in self.items]


class CocoSource(_DetectionSource):
    """COCO object detection JSON: one *.json file beside images/ (file_name relative to images/, else
    to the folder). Boxes are [x, y, width, height] in pixels; class ids follow the categories in
    the file's order of category id."""

    format = "coco"

    def __init__(self, spec, path: str):
        if not os.path.isdir(path):
            raise invalid(f"collect.source: {path!r} is not a folder (coco needs one *.json file and images/)")
        found = sorted(n for n in os.listdir(path) if n.lower().endswith(".json") and not n.startswith("."))
        if len(found) != 1:
            raise invalid(
                f"collect.source: coco needs exactly one .json annotation file in {path!r}, found {len(found)}"
            )
        self.json_name, self.json_path = found[0], os.path.join(path, found[0])
        try:
            with open_binary(self.json_path) as f:
                doc = json.load(f)
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid(f"collect.source: {self.json_name} is not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise invalid(f"collect.source: {self.json_name} is not a COCO object (images, annotations, categories)")
        self.decoder = _ImageDecoder(spec)
        where = f"collect.source: {self.json_name}"
        categories = _list(doc, "categories", where)
        names_by_id: dict[int, str] = {}
        for i, cat in enumerate(categories):
            cid, cname = (
                _get(cat, "id", int, f"{where} categories[{i}]"),
                _get(cat, "name", str, f"{where} categories[{i}]"),
            )
            names_by_id[cid] = cname.strip()
        class_names = [names_by_id[c] for c in sorted(names_by_id)]
        if len(set(class_names)) != len(class_names) or not all(class_names):
            raise invalid(f"{where} categories: names must be unique and non-empty")
        images: dict[int, tuple[str, str, int, int]] = {}
        for i, img in enumerate(_list(doc, "images", where)):
            at = f"{where} images[{i}]"
            iid, file_name = _get(img, "id", int, at), _get(img, "file_name", str, at)
            candidates = [os.path.join(path, "images", file_name), os.path.join(path, file_name)]
            full = next((c for c in candidates if os.path.isfile(c)), None)
            if ".." in file_name.replace("\\", "/").split("/") or os.path.isabs(file_name) or full is None:
                raise not_found(f"{at}.file_name: images/{file_name} not found")
            rel = os.path.relpath(full, path).replace(os.sep, "/")
            width, height = _pixel_size(rel, full)
            images[iid] = (rel, full, width, height)
        objects: dict[int, tuple[list[str], list[list[float]]]] = {}
        for i, ann in enumerate(_list(doc, "annotations", where)):
            at = f"{where} annotations[{i}]"
            iid, cid = _get(ann, "image_id", int, at), _get(ann, "category_id", int, at)
            if cid not in names_by_id:
                raise invalid(
                    f"{at}.category_id: {cid} is not a category of the file (categories: "
                    f"{', '.join(f'{k} {names_by_id[k]}' for k in sorted(names_by_id))})"
                )
            if iid not in images:
                raise invalid(f"{at}.image_id: {iid} is not an image of the file")
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
                raise invalid(f"{at}.bbox: expected [x, y, width, height] in pixels")
            x, y, w, h = (float(v) for v in bbox)
            _, _, width, height = images[iid]
            names, boxes = objects.setdefault(iid, ([], []))
            names.append(names_by_id[cid])
            boxes.append(_normalised(f"{at}.bbox", (x, y, x + w, y + h), width, height))
        items = []
        for iid, (rel, full, _, _) in images.items():
            if iid not in objects:
                raise invalid(f"{where}: image {iid} ({rel}) has no annotations (every image needs at least one box)")
            names, boxes = objects[iid]
            items.append((rel, full, names, boxes))
        if not items:
            raise invalid(f"{where}: no images")
        self._setup(items, class_names)

    def files(self):
        return [(self.json_name, self.json_path)] + [(name, path) for name, path, _, _ in self.items]


def _list(doc: dict, key: str, where: str) -> list:
    value = doc.get(key)
    if not isinstance(value, list):
        raise invalid(f"{where}: {key!r} is missing or not a list")
    return value


def _get(obj, key: str, kind, where: str):
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise invalid(f"{where}.{key}: missing or not a{'n' if kind is int else ''} {kind.__name__}")
    return value
