"""Serve's per-row input checks in process (services/serve/inputs.py): reading the input
specs of old and new cookline.json records (layout.parse_model_record), image format and
size from real file headers (PNG, JPEG, GIF, BMP, each also decoded by TensorFlow to show it is a real file), the
byte and pixel limits, numbers, NaN and strings."""

import struct

import grpc
import numpy as np
import pytest
import tensorflow as tf

from services.common import layout
from services.common.errors import Fail
from services.serve import inputs
from services.serve.inputs import Limits

IMAGE = inputs.InputSpec("image", "string", [-1], "image", encodings=list(inputs.ENCODINGS))
FEATURES = inputs.InputSpec("features", "float32", [-1, 2], "numeric", columns=["x", "y"])


def bmp(width: int, height: int) -> bytes:
    """A 24-bit BMP (rows padded to 4 bytes)."""
    row = (width * 3 + 3) // 4 * 4
    pixels = bytes(row * height)
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


# A 3x2 GIF89a: one colour, one image block of LZW data.
GIF = (
    b"GIF89a\x03\x00\x02\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff,\x00\x00\x00\x00\x03\x00\x02\x00"
    b"\x00\x02\x03\x84\x8f\x05\x00;"
)


@pytest.mark.parametrize(
    "kind, data, size",
    [
        ("png", tf.io.encode_png(tf.zeros([5, 7, 1], tf.uint8)).numpy(), (7, 5)),
        ("jpeg", tf.io.encode_jpeg(tf.zeros([9, 4, 3], tf.uint8)).numpy(), (4, 9)),
        ("gif", GIF, (3, 2)),
        ("bmp", bmp(6, 3), (6, 3)),
    ],
)
def test_format_and_size_come_from_the_header_of_real_files(kind, data, size):
    decoded = tf.io.decode_image(data, expand_animations=False).numpy()
    assert decoded.shape[:2] == (size[1], size[0])  # TensorFlow reads the same file
    assert inputs.sniff(data) == kind and inputs.image_size(kind, data) == size
    inputs.check_image(IMAGE, 0, data, Limits())


def invalid_message(fn, *args) -> str:
    with pytest.raises(Fail) as info:
        fn(*args)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return str(info.value)


def test_limits_and_broken_headers_name_the_row():
    png = tf.io.encode_png(tf.zeros([100, 100, 1], tf.uint8)).numpy()
    assert "row 4: image of 100x100 pixels is over the limit of 9999" in invalid_message(
        inputs.check_image, IMAGE, 4, png, Limits(1 << 20, 9999)
    )
    assert f"row 2: image of {len(png)} bytes is over the limit of 10" in invalid_message(
        inputs.check_image, IMAGE, 2, png, Limits(10, 10**9)
    )
    assert "row 0: not an image the model can decode (a PNG whose header is cut" in invalid_message(
        inputs.check_image, IMAGE, 0, png[:14], Limits()
    )
    assert "row 1: not an image" in invalid_message(inputs.check_image, IMAGE, 1, b"%PDF-1.7", Limits())
    only_png = inputs.InputSpec("image", "string", [-1], "image", encodings=["png"])
    assert "row 0: GIF is not accepted by this model (accepted: png)" in invalid_message(
        inputs.check_image, only_png, 0, GIF, Limits()
    )


def test_numbers_nan_infinity_and_strings():
    ok = inputs.check(FEATURES, np.array([[1, 2]], np.float32), Limits())
    assert ok.tolist() == [[1, 2]]
    assert "row 1, column 'y': NaN is not accepted" in invalid_message(
        inputs.check, FEATURES, np.array([[1, 2], [3, np.nan]], np.float32), Limits()
    )
    parsed = inputs.check(FEATURES, np.array([[b"1.5", b" -2 "]], object), Limits())
    assert parsed.dtype == np.float32 and parsed.tolist() == [[1.5, -2]]
    assert "row 0, column 'x': 'abc' is not a number" in invalid_message(
        inputs.check, FEATURES, np.array([[b"abc", b"1"]], object), Limits()
    )
    filled = inputs.InputSpec("features", "float32", [-1, 2], "numeric", columns=["x", "y"], allow_nan=True)
    assert np.isnan(inputs.check(filled, np.array([[b"", b"1"]], object), Limits())[0, 0])
    assert "infinity" in invalid_message(inputs.check, filled, np.array([[np.inf, 1]], np.float32), Limits())


def test_specs_of_an_old_record_and_a_raw_one():
    old = inputs.specs_from_record(
        layout.parse_model_record(
            {"inputs": {"features": {"dtype": "float32", "shape": [-1, 4]}}, "feature_columns": ["a", "b", "c", "d"]}
        )
    )
    assert list(old) == ["features"] and old["features"].kind == "numeric" and old["features"].columns == list("abcd")
    assert not old["features"].allow_nan
    raw = inputs.specs_from_record(
        layout.parse_model_record(
            {
                "inputs": {
                    "features": {"dtype": "float32", "shape": [-1, 2], "kind": "numeric", "columns": ["x", "y"]},
                    "image": {
                        "dtype": "string",
                        "shape": [-1],
                        "kind": "image",
                        "encodings": ["png"],
                        "image": {"height": 8, "width": 8, "channels": 1},
                    },
                },
                "process": [{"fill_missing": {"strategy": "mean"}}, {"standardize": {}}],
                "served_from_op": 0,
            }
        )
    )
    assert raw["features"].allow_nan and raw["image"].encodings == ["png"] and raw["image"].image["height"] == 8
    # a fill_missing op before the served part does not fill what the model gets
    before = inputs.specs_from_record(
        layout.parse_model_record(
            {
                "inputs": {"features": {"dtype": "float32", "shape": [-1, 2]}},
                "process": [{"fill_missing": {}}, {"standardize": {}}],
                "served_from_op": 1,
            }
        )
    )
    assert not before["features"].allow_nan
