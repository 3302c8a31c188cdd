"""A served model's raw inputs: what each one is (from cookline.json's "inputs"), and
the per-row checks every request passes before it reaches the model.

    "features"    float32 [rows, d]         numeric
    "categorical" string  [rows, k]         category
    "text"        string  [rows] / [rows,t] text
    "image"       string  [rows]            image (encoded PNG/JPEG/GIF/BMP)

A record without "kind" (a model published before raw inputs) is numeric "features".
The checks raise INVALID_ARGUMENT naming the input and the row, so a stream can answer
that message with an error and go on, and one bad row never fails a batch of others.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from cookline import config, tensors
from cookline.v1 import records_pb2
from services.common import layout
from services.common.errors import invalid

KINDS = ("numeric", "category", "text", "image")
ENCODINGS = layout.IMAGE_ENCODINGS


@dataclass(frozen=True)
class Limits:
    """Serve's input limits, read once at start-up (cookline.config has the settings)."""

    max_image_bytes: int = config.DEFAULT_SERVE_MAX_IMAGE_BYTES
    max_image_pixels: int = config.DEFAULT_SERVE_MAX_IMAGE_PIXELS

    @classmethod
    def from_env(cls, env=None) -> Limits:
        return cls(config.serve_max_image_bytes(env), config.serve_max_image_pixels(env))


@dataclass
class InputSpec:
    """One raw input of a model, as cookline.json describes it."""

    name: str
    dtype: str  # "float32" or "string"
    shape: list[int]  # [-1, ...]
    kind: str  # numeric, category, text, image
    columns: list[str] = field(default_factory=list)
    encodings: list[str] = field(default_factory=list)
    image: dict | None = None  # {"height", "width", "channels"}
    allow_nan: bool = False  # numeric: NaN means missing and the model fills it

    @property
    def is_string(self) -> bool:
        return self.dtype == "string"

    def describe(self) -> str:
        dims = ", ".join("rows" if d == -1 else str(d) for d in self.shape)
        return f"{self.dtype} [{dims}], kind {self.kind}"

    def column(self, j: int) -> str:
        return f"column {self.columns[j]!r}" if j < len(self.columns) else f"column {j}"


def specs_from_record(record: records_pb2.ModelRecord) -> dict[str, InputSpec]:
    """The inputs of a model record, in signature order (old records, as layout.parse_model_record
    completes them, are numeric "features")."""
    fills = _fills_missing(record)
    specs = {}
    for described, raw in record.inputs.ListFields():
        image = raw.image
        specs[described.name] = InputSpec(
            described.name,
            raw.dtype,
            list(raw.shape),
            raw.kind,
            list(raw.columns),
            list(raw.encodings),
            {"height": image.height, "width": image.width, "channels": image.channels}
            if raw.HasField("image")
            else None,
            allow_nan=raw.kind == "numeric" and fills,
        )
    return specs


def _fills_missing(record: records_pb2.ModelRecord) -> bool:
    """True when the exported model applies a fill_missing op (NaN is then a missing value it fills)."""
    served = record.process[record.served_from_op :]
    return any(op.WhichOneof("kind") == "fill_missing" for op in served)


def _rows_error(spec: InputSpec, shape) -> str:
    return f"inputs[{spec.name!r}]: shape {list(shape)}, expected {spec.describe()}"


def check_shape(spec: InputSpec, array: np.ndarray) -> None:
    if array.ndim != len(spec.shape):
        raise invalid(_rows_error(spec, array.shape))
    for got, want in zip(array.shape[1:], spec.shape[1:], strict=True):
        if want != -1 and got != want:
            if spec.kind == "numeric" and len(spec.shape) == 2:
                raise invalid(f"inputs[{spec.name!r}]: {got} features per row, the model expects {want}")
            raise invalid(_rows_error(spec, array.shape))


def check_numeric(spec: InputSpec, values: np.ndarray) -> np.ndarray:
    """float32 values: finite, or NaN where the model fills missing values. Strings are parsed."""
    if values.dtype == object:
        values = _parse_numbers(spec, values)
    check_shape(spec, values)
    finite = np.isfinite(values)
    if not finite.all():
        bad = ~finite if not spec.allow_nan else np.isinf(values)
        if bad.any():
            row, *rest = np.argwhere(bad)[0]
            what = "NaN" if np.isnan(values[(row, *rest)]) else "infinity"
            col = f", {spec.column(rest[0])}" if rest else ""
            hint = "" if what != "NaN" else " (the model has no fill_missing op; send a number)"
            raise invalid(f"inputs[{spec.name!r}] row {row}{col}: {what} is not accepted{hint}")
    return values


def _parse_numbers(spec: InputSpec, strings: np.ndarray) -> np.ndarray:
    """Decimal strings as float32; an empty string is a missing value (NaN)."""
    out = np.empty(strings.shape, np.float32)
    flat, dest = strings.reshape(-1), out.reshape(-1)
    width = strings.shape[-1] if strings.ndim > 1 else 1
    for i, value in enumerate(flat):
        text = value.decode("utf-8", "replace").strip() if isinstance(value, bytes) else str(value).strip()
        try:
            dest[i] = float(text) if text else np.nan
        except ValueError:
            col = f", {spec.column(i % width)}" if strings.ndim > 1 else ""
            raise invalid(
                f"inputs[{spec.name!r}] row {i // width}{col}: {text[:40]!r} is not a number (kind numeric)"
            ) from None
    return out


def check_strings(spec: InputSpec, values: np.ndarray, limits: Limits) -> np.ndarray:
    check_shape(spec, values)
    if spec.kind == "image":
        for row, data in enumerate(values.reshape(-1)):
            check_image(spec, row, data, limits)
    else:
        for i, value in enumerate(values.reshape(-1)):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                width = values.shape[-1] if values.ndim > 1 else 1
                col = f", {spec.column(i % width)}" if values.ndim > 1 else ""
                raise invalid(f"inputs[{spec.name!r}] row {i // width}{col}: not valid UTF-8 text") from None
    return values


def check(spec: InputSpec, array: np.ndarray, limits: Limits) -> np.ndarray:
    """The input as the model takes it; INVALID_ARGUMENT naming the input (and row) otherwise."""
    if spec.is_string:
        if array.dtype != object:
            raise invalid(
                f"inputs[{spec.name!r}]: dtype {tensors.dtype_name(tensors.data_type(array.dtype))}, "
                f"expected {spec.describe()}"
            )
        return check_strings(spec, array, limits)
    if array.dtype != np.float32 and array.dtype != object:
        raise invalid(f"inputs[{spec.name!r}]: dtype {array.dtype.name}, expected {spec.describe()}")
    return check_numeric(spec, array)


# --- images: the format and size, read from the header (no decoding) ------------------


def sniff(data: bytes) -> str | None:
    """The image format of encoded bytes, from their signature."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    return None


def image_size(kind: str, data: bytes) -> tuple[int, int] | None:
    """(width, height) from the file's header, or None when the header is cut or broken."""
    try:
        if kind == "png":
            if data[12:16] != b"IHDR":
                return None
            return struct.unpack(">II", data[16:24])
        if kind == "gif":
            return struct.unpack("<HH", data[6:10])
        if kind == "bmp":
            if len(data) < 26:
                return None
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)
        pos = 2  # jpeg: walk the markers to the first start-of-frame
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                return None
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
                return width, height
            pos += 2 + length
        return None
    except struct.error:
        return None


def check_image(spec: InputSpec, row: int, data: bytes, limits: Limits) -> None:
    where = f"inputs[{spec.name!r}] row {row}"
    if len(data) > limits.max_image_bytes:
        raise invalid(
            f"{where}: image of {len(data)} bytes is over the limit of {limits.max_image_bytes} "
            "(COOKLINE_SERVE_MAX_IMAGE_BYTES)"
        )
    kind = sniff(data)
    if kind is None:
        raise invalid(
            f"{where}: not an image the model can decode ({len(data)} bytes starting "
            f"{data[:8]!r}; accepted: {', '.join(spec.encodings)})"
        )
    if kind not in spec.encodings:
        raise invalid(f"{where}: {kind.upper()} is not accepted by this model (accepted: {', '.join(spec.encodings)})")
    size = image_size(kind, data)
    if size is None or 0 in size:
        raise invalid(f"{where}: not an image the model can decode (a {kind.upper()} whose header is cut or broken)")
    if size[0] * size[1] > limits.max_image_pixels:
        raise invalid(
            f"{where}: image of {size[0]}x{size[1]} pixels is over the limit of {limits.max_image_pixels} "
            "(COOKLINE_SERVE_MAX_IMAGE_PIXELS)"
        )


# --- warm-up inputs ------------------------------------------------------------------


def warmup_inputs(specs: dict[str, InputSpec], rows: int, png: bytes) -> dict[str, np.ndarray]:
    """Inputs of `rows` rows the model accepts, to trace and allocate before serving."""
    out = {}
    for spec in specs.values():
        shape = [rows] + [d if d != -1 else 1 for d in spec.shape[1:]]
        if not spec.is_string:
            out[spec.name] = np.zeros(shape, np.float32)
        else:
            values = np.empty(shape, object)
            values.fill(png if spec.kind == "image" else b"")
            out[spec.name] = values
    return out
