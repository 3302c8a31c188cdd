"""Ingest speed: collect's full ingest against the field's readers of the same files, in one run.

1. A generated numeric CSV (784 float columns and a class label, at least --mb MB): collect's
   `Ingest` RPC (a real collect process on a local store; the timing covers the content hash of
   the file, parsing, statistics, the shards written and published with their checksums, and the
   manifest) against `pandas.read_csv` of the same file in this process. Target: >= 0.5x pandas'
   MB/s.
2. A generated folder of --images PNGs in class folders: collect's `Ingest` (image-folder)
   against `tf.keras.utils.image_dataset_from_directory` iterating every batch of the same folder,
   both decoding and resizing to the same 64x64 (collect.image_size, Keras' image_size).
   Target: >= 1.0x Keras' images/s.

Both sides alternate --repeat times on a warm page cache; the medians are compared. Each side's
CPU seconds are printed too (collect's from /proc, this process's for pandas and Keras): on a
shared machine the wall-clock ratio moves with the load, the CPU figures less so.

    .venv/bin/python bench/ingest.py [--mb 330] [--images 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time

import numpy as np
from common import cpu_seconds, data_plane, scratch
from memory import PeakRss

from cookline import channels
from cookline.v1 import collect_pb2, collect_pb2_grpc, pipeline_pb2

FEATURES = 784
ROWS_PER_WRITE = 4096


def write_csv(path: str, megabytes: float) -> int:
    """A CSV of FEATURES float columns (6 significant digits) and a label "c0".."c9", of at least
    `megabytes` MB; returns its rows."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(FEATURES)] + ["label"]
    rows = 0
    with pa_csv.CSVWriter(path, pa.schema([(n, pa.string()) for n in names])) as writer:
        while os.path.getsize(path) < megabytes * 1e6:
            x = rng.normal(0, 2, (ROWS_PER_WRITE, FEATURES))
            cells = np.char.mod("%.6g", x)
            labels = np.char.add("c", rng.integers(0, 10, ROWS_PER_WRITE).astype(str))
            columns = [pa.array(cells[:, j]) for j in range(FEATURES)] + [pa.array(labels)]
            writer.write_batch(pa.record_batch(columns, names=names))
            rows += ROWS_PER_WRITE
    return rows


def write_images(root: str, count: int, size: int = 64, classes: int = 10) -> None:
    """`count` RGB PNGs of size x size in `classes` class folders: smooth shapes plus noise."""
    from PIL import Image

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(count):
        folder = os.path.join(root, f"class{i % classes}")
        os.makedirs(folder, exist_ok=True)
        cx, cy, r = rng.integers(8, size - 8, 2).tolist() + [int(rng.integers(4, size // 3))]
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r)[:, :, None]
        base = rng.integers(0, 256, 3, dtype=np.uint8)
        pixels = np.where(disc, 255 - base, base) + rng.integers(0, 24, (size, size, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(os.path.join(folder, f"{i:05d}.png"))


def folder_bytes(root: str) -> int:
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(root) for n in names)


def warm(path: str) -> None:
    """Reads a file or folder once, so every side reads from the page cache."""
    files = [path] if os.path.isfile(path) else [os.path.join(d, n) for d, _, ns in os.walk(path) for n in ns]
    for name in files:
        with open(name, "rb") as f:
            while f.read(1 << 22):
                pass


def collect_ingest(stub, pid: int, name: str, spec: pipeline_pb2.CollectSpec, rss: dict) -> tuple[float, float, int]:
    """(wall seconds, collect's CPU seconds, rows) of one full Ingest; rss["peak"]: collect's peak RSS
    growth (MB) over its RSS before the call, the largest so far."""
    cpu, t0 = cpu_seconds(pid), time.perf_counter()
    last = None
    with PeakRss({"collect": pid}) as peak:
        for last in stub.Ingest(collect_pb2.IngestRequest(dataset=name, source=spec), timeout=3600):  # noqa: B007 - the last message counts
            pass
    wall = time.perf_counter() - t0
    rss["peak"] = max(rss.get("peak", 0.0), peak.peak["collect"] - peak.base["collect"])
    assert last is not None and not last.reused, "a fresh dataset name must not reuse a version"
    return wall, cpu_seconds(pid) - cpu, last.dataset.num_rows


def timed(fn) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of fn()."""
    cpu, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - cpu


def pandas_read(path: str) -> int:
    import pandas as pd

    return len(pd.read_csv(path))


def keras_iterate(root: str, size: int) -> int:
    import tensorflow as tf

    dataset = tf.keras.utils.image_dataset_from_directory(
        root, image_size=(size, size), batch_size=256, shuffle=False, verbose=False
    )
    return sum(int(images.shape[0]) for images, _ in dataset)


def compare(title: str, unit: str, amount: float, ours: list, theirs: list, baseline: str, target: float) -> None:
    """Prints medians of (wall, cpu) pairs as rates of `amount` units, and the ratios."""
    ours_wall, ours_cpu = statistics.median(w for w, _ in ours), statistics.median(c for _, c in ours)
    their_wall, their_cpu = statistics.median(w for w, _ in theirs), statistics.median(c for _, c in theirs)
    ratio = their_wall / ours_wall
    print(title)
    print(f"  collect Ingest   {amount / ours_wall:10.1f} {unit}/s  ({ours_wall:.2f} s, collect CPU {ours_cpu:.2f} s)")
    print(f"  {baseline:<16} {amount / their_wall:10.1f} {unit}/s  ({their_wall:.2f} s, CPU {their_cpu:.2f} s)")
    print(
        f"  ratio {ratio:.2f}x (target >= {target}x: {'met' if ratio >= target else 'NOT met'}); "
        f"by CPU seconds {their_cpu / ours_cpu:.2f}x; "
        f"every run: ours {runs(ours)} s, theirs {runs(theirs)} s"
    )


def runs(pairs: list) -> str:
    return ", ".join(f"{wall:.2f}" for wall, _ in pairs)


def main() -> None:
    import pandas  # noqa: F401 - imported before any timing
    import tensorflow  # noqa: F401 - imported before any timing

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=330, help="size of the generated CSV in MB (at least 300)")
    parser.add_argument("--images", type=int, default=5000, help="PNGs in the generated image folder")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--keep", action="store_true", help="keep the generated data and store")
    args = parser.parse_args()
    root = scratch("cookline-bench-ingest-")
    stack, env = data_plane(os.path.join(root, "store"))
    try:
        stub = collect_pb2_grpc.CollectServiceStub(channels.channel("collect", env))
        pid = stack.procs["collect"].pid
        load = os.getloadavg()[0]
        print(f"{os.cpu_count()} CPUs, load average {load:.1f} at the start")
        if args.mb:
            path = os.path.join(root, "numeric.csv")
            rows = write_csv(path, args.mb)
            size = os.path.getsize(path) / 1e6
            warm(path)
            ours, theirs, rss = [], [], {}
            for i in range(args.repeat):
                theirs.append(timed(lambda: pandas_read(path)))
                spec = pipeline_pb2.CollectSpec(source=path, label="label")
                wall, cpu, got = collect_ingest(stub, pid, f"csv{i}", spec, rss)
                assert got == rows, (got, rows)
                ours.append((wall, cpu))
            compare(
                f"CSV {size:.0f} MB, {rows} rows x {FEATURES} numbers + label:",
                "MB",
                size,
                ours,
                theirs,
                "pandas.read_csv",
                0.5,
            )
            print(f"  collect's peak RSS growth during an ingest: +{rss['peak']:.0f} MB")
        if args.images:
            folder = os.path.join(root, "images")
            write_images(folder, args.images)
            warm(folder)
            ours, theirs, rss = [], [], {}
            for i in range(args.repeat):
                theirs.append(timed(lambda: keras_iterate(folder, 64)))
                # The size Keras resizes to: both sides decode and resize to 64x64.
                spec = pipeline_pb2.CollectSpec(source=folder, format="image-folder", image_size=[64, 64])
                wall, cpu, got = collect_ingest(stub, pid, f"img{i}", spec, rss)
                assert got == args.images, (got, args.images)
                ours.append((wall, cpu))
            compare(
                f"image folder, {args.images} PNGs of 64x64 RGB ({folder_bytes(folder) / 1e6:.0f} MB):",
                "images",
                args.images,
                ours,
                theirs,
                "Keras from dir",
                1.0,
            )
            print(f"  collect's peak RSS growth during an ingest: +{rss['peak']:.0f} MB")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        stack.stop_all()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
