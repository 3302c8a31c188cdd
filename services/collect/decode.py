"""Image decoding for collect's image sources, run in worker processes (sources/images.py).

This module imports only numpy, Pillow and pyspng: it is what a worker process loads (the workers are
spawned, never forked from the service, whose gRPC threads a fork would copy in a broken state). A
worker gets batches of files (a local path, or the bytes of an s3:// object) on a pipe and sends back,
for each, the pixels and source shape, or why it cannot be read as a string (an exception may not
survive pickling), up to the first failure of the batch. Plain pipes, read and written by the
ingest's own thread: a pool's hand-overs between threads cost more than the decoding.
"""

from __future__ import annotations

import io
import queue
import struct
import threading
import zlib
from multiprocessing.connection import Connection

import numpy as np
import pyspng
from PIL import Image, ImageFile, UnidentifiedImageError

# Pillow modes of the PNGs whose samples libspng decodes (_png_samples).
PNG_MODES = ("L", "LA", "RGB", "RGBA")
# What reading an image file that is not a readable PNG or JPEG raises.
UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def read_image(f, color: str, size: tuple[int, ...]) -> tuple[np.ndarray, str, str]:
    """(pixels uint8 [h, w] or [h, w, c], source shape "HxWxC", color) of the open binary file `f`,
    converted to `color` ("grayscale" or "rgb"; empty: the image's own, returned) and resized to `size`
    (height, width; empty: kept). Raises one of UNREADABLE for a file that is not a readable image."""
    with Image.open(f) as img:
        samples = _png_samples(img, f)
        if samples is None:
            img.load()
        color = color or ("grayscale" if img.mode in ("L", "1", "I", "I;16", "F") else "rgb")
        source_shape = f"{img.height}x{img.width}x{len(img.getbands())}"
        mode = "L" if color == "grayscale" else "RGB"
        if samples is not None and img.mode == mode and (not size or size == samples.shape[:2]):
            return samples, source_shape, color  # what convert() and resize() would copy unchanged
        pixels = (img if samples is None else Image.fromarray(samples)).convert(mode)
        if size:
            pixels = pixels.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(pixels, dtype=np.uint8), source_shape, color


def read_batch(files: list, color: str, size: tuple[int, ...]) -> list:
    """read_image() of each file (a path, or the bytes of the file) as (pixels, source shape), up to
    the first that fails: ("unreadable", reason) for a file that is not a readable image, or
    ("failed", what was raised) for any other error, ends the list."""
    out: list = []
    for file in files:
        try:
            with open(file, "rb") if isinstance(file, str) else io.BytesIO(file) as f:
                pixels, source_shape, _ = read_image(f, color, size)
        except UNREADABLE as exc:
            out.append(("unreadable", str(exc)))
            break
        except Exception as exc:  # whatever it is, reported by the service for this file
            out.append(("failed", f"{type(exc).__name__}: {exc}"))
            break
        out.append((pixels, source_shape))
    return out


def serve(tasks: Connection, results: Connection) -> None:
    """A worker process: for each (files, color, size) received on `tasks`, read_batch() sent on
    `results`, in order. A thread receives the tasks while the batches decode, so the service never
    waits to send one. The worker ends when the service closes its end of `tasks`, or ends itself."""
    queued: queue.SimpleQueue = queue.SimpleQueue()

    def receive() -> None:
        try:
            while True:
                queued.put(tasks.recv())
        except (EOFError, OSError):
            queued.put(None)

    threading.Thread(target=receive, name="collect-decode-tasks", daemon=True).start()
    while (task := queued.get()) is not None:
        try:
            results.send(read_batch(*task))
        except (BrokenPipeError, OSError):
            break


def _png_samples(img: ImageFile.ImageFile, f) -> np.ndarray | None:
    """The pixels of an 8-bit PNG without a palette (Pillow mode L, LA, RGB or RGBA) that Pillow has
    opened (signature, header and the chunks before the image data checked, the pixel limit
    applied), decoded by libspng: the values img.load() gives, at less than half its cost. None for
    any other image, or when libspng refuses the file: Pillow then decodes it and names the fault."""
    if img.format != "PNG" or img.mode not in PNG_MODES or len(img.tile) != 1 or img.tile[0].args != img.mode:
        return None  # a palette, 16-bit or 1/2/4-bit samples, or JPEG: Pillow's own conversions
    f.seek(0)
    data = f.read()
    if not _chunks_intact(data):
        return None
    try:
        samples = pyspng.load(data)
    except (RuntimeError, ValueError):
        return None
    if samples.dtype != np.uint8 or samples.shape[:2] != (img.height, img.width):
        return None
    return samples


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
