"""The image-folder source's decoding (services/collect/sources/images.py): libspng's pixels for plain
PNGs and the threads give exactly what Pillow alone gives (convert + resize of each image), and damaged
files, mixed sizes and the first failing file are reported as Pillow one at a time reports them.
In process: no server."""

import numpy as np
import pytest
from PIL import Image

from cookline.v1 import pipeline_pb2
from services.collect.sources import images
from services.collect.sources.images import ImageFolderSource
from services.common.errors import Fail

# Pillow modes saved as PNG (L, LA, RGB, RGBA go to libspng; P, 1, I;16 stay with Pillow), and JPEG.
MODES = ["RGB", "L", "P", "RGBA", "LA", "1", "I;16", "JPEG"]


def make_folder(root, count=150, size=(16, 12)):
    """`count` images over two class folders, of every mode, some interlaced, some with a tRNS chunk."""
    rng = np.random.default_rng(5)
    for i in range(count):
        folder = root / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        mode = MODES[i % len(MODES)]
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        if mode == "JPEG":
            Image.fromarray(pixels).save(folder / f"{i:04d}.jpg")
            continue
        if mode == "I;16":
            img = Image.fromarray(pixels[:, :, 0].astype(np.uint16) * 257)
        else:
            img = Image.fromarray(pixels).convert(mode)
        options: dict = {"interlace": 1} if i % 3 == 0 else {}
        if i % 5 == 0 and mode in ("RGB", "L"):
            options["transparency"] = (1, 2, 3) if mode == "RGB" else 5
        img.save(folder / f"{i:04d}.png", **options)
    return root


def ingest(root, **options) -> tuple[dict, ImageFolderSource]:
    source = ImageFolderSource(pipeline_pb2.CollectSpec(source=str(root), format="image-folder", **options), str(root))
    chunks = list(source.chunks())
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}, source


def pillow_alone(root, color: str, size=None) -> tuple[np.ndarray, dict[str, int]]:
    """What Pillow gives for each file, one at a time, in the source's order, and the source shapes."""
    out, shapes = [], {}
    for path in sorted(root.glob("*/*")):
        with Image.open(path) as img:
            shape = f"{img.height}x{img.width}x{len(img.getbands())}"
            shapes[shape] = shapes.get(shape, 0) + 1
            color = color or ("grayscale" if img.mode in ("L", "1", "I", "I;16", "F") else "rgb")  # the first's
            pixels = img.convert("L" if color == "grayscale" else "RGB")
            if size:
                pixels = pixels.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(pixels, dtype=np.uint8)
        out.append(array[:, :, None] if array.ndim == 2 else array)
    return np.stack(out), shapes


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"color": "grayscale"},
        {"image_size": [16, 12]},
        {"image_size": [5, 7]},
        {"image_size": [9, 9], "color": "rgb"},
    ],
)
def test_pixels_equal_pillow_alone(tmp_path, monkeypatch, options):
    root = make_folder(tmp_path / "imgs")
    libspng = []
    load = images.pyspng.load
    monkeypatch.setattr(images.pyspng, "load", lambda data: libspng.append(1) or load(data))
    monkeypatch.setattr(images, "DECODE_BATCH", 7)  # several batches in flight, a short last one
    rows, source = ingest(root, **options)
    expected, shapes = pillow_alone(root, options.get("color", ""), options.get("image_size"))
    assert rows["image"].dtype == np.uint8 and rows["image"].shape == expected.shape
    assert np.array_equal(rows["image"], expected)
    assert rows["label"].tolist() == [int(p.parent.name[1:]) for p in sorted(root.glob("*/*"))]
    assert source.image_shapes == shapes and list(source.image_shapes) == list(shapes)
    assert 60 < len(libspng) < 150  # the plain PNGs went to libspng, the others to Pillow


def test_damaged_png_is_refused_as_pillow_refuses_it(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    for i in range(40):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
            root / "a" / f"{i:02d}.png"
        )
    path = root / "a" / "30.png"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the image data: its CRC (and zlib's check) no longer match
    path.write_bytes(bytes(data))
    with pytest.raises(Fail) as caught:
        ingest(root)
    assert caught.value.message.startswith("collect.source: a/30.png is not a readable PNG or JPEG image (")


def test_the_first_failure_in_file_order_is_the_one_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "DECODE_BATCH", 4)
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    for i in range(30):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "a" / f"{i:02d}.png")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "a" / "17.png")  # a size that differs
    (root / "a" / "25.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # later, and unreadable
    with pytest.raises(Fail) as caught:
        ingest(root)
    assert caught.value.message.startswith("collect.source: a/17.png is 9x9, but earlier images are 8x8")
    (root / "a" / "06.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # now an earlier one is unreadable
    with pytest.raises(Fail) as caught:
        ingest(root)
    assert caught.value.message.startswith("collect.source: a/06.png is not a readable PNG or JPEG image")


@pytest.mark.parametrize("damage", ["truncated", "header crc", "no iend", "data crc"])
def test_plain_png_checks_hold_without_pillows_open(tmp_path, damage):
    """libspng decodes plain PNGs without Pillow opening them: a damaged one still goes to Pillow,
    so the outcome is Pillow's alone: refused with its reason, or the same pixels."""
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i * 50, np.uint8)).save(root / "a" / f"{i}.png")
    path = root / "a" / "1.png"
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) - 40]
    elif damage == "header crc":
        data[29] ^= 0xFF  # IHDR's CRC
    elif damage == "no iend":
        data = data[:-12]
    else:
        data[-13] ^= 0xFF  # the last byte of IDAT's CRC
    path.write_bytes(bytes(data))
    try:
        expected, _ = pillow_alone(root, "")
    except (OSError, SyntaxError, ValueError):
        with pytest.raises(Fail) as caught:
            ingest(root)
        assert caught.value.message.startswith("collect.source: a/1.png is not a readable PNG or JPEG image (")
    else:
        assert np.array_equal(ingest(root)[0]["image"], expected)


def test_pillows_pixel_limit_applies_to_plain_pngs(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "a" / "0.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)  # 64 pixels: over twice the limit
    with pytest.raises(Image.DecompressionBombError):
        ingest(root)
