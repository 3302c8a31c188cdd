"""Larger than memory: ingest and stream a generated dataset end to end, measuring each service's RSS.

For each size (default 1 GB and 4 GB): writes an .npz of float32 [n, 784] features and int32
labels to disk in chunks, ingests it with collect (npz source: streamed, sharded, statistics),
fits a standardize op through process (a pass over the data) and streams every row
collect -> process -> consumer with the op applied. Prints each service's peak RSS growth over
its idle RSS (target: <= 256 MB at every size) and the stream's MB/s.

Then (--s3-csv-mb, default 512) the same for an s3:// CSV: a CSV of that size is put into a
SeaweedFS bucket and collect ingests s3://bucket/big.csv, which it streams by ranged GETs; the
row prints collect's peak RSS growth and the peak size of its scratch folder (TMPDIR): shards
spooled before upload, and 0 MB for the source, because no local copy of the object is made.

    .venv/bin/python bench/memory.py [--gb 1 4] [--s3-csv-mb 512] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
import zipfile

import numpy as np
from common import WIDTH, data_plane, rss_mb, scratch

from cookline import channels
from cookline.v1 import collect_pb2, collect_pb2_grpc, pipeline_pb2, process_pb2, process_pb2_grpc

CHUNK_ROWS = 8192


def write_npz(path: str, rows: int) -> None:
    """An uncompressed .npz with 'features' float32 [rows, 784] and 'label' int32 [rows], written in chunks."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, dtype, shape in (("features", np.float32, (rows, WIDTH)), ("label", np.int32, (rows,))):
            with archive.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_2_0(
                    f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
                )
                for lo in range(0, rows, CHUNK_ROWS):
                    n = min(CHUNK_ROWS, rows - lo)
                    if name == "features":
                        f.write(rng.random((n, WIDTH), dtype=np.float32).tobytes())
                    else:
                        f.write(rng.integers(0, 10, n).astype(np.int32).tobytes())


class PeakRss:
    """Samples the RSS of some processes on a thread; keeps the peak of each."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.base = {name: rss_mb(pid) for name, pid in pids.items()}
        self.peak = dict(self.base)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_mb(pid))
            self.stop.wait(0.1)  # sampling period

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def run(gb: float, keep: bool) -> dict:
    root = scratch("cookline-bench-mem-")
    stack, env = data_plane(os.path.join(root, "store"))
    try:
        rows = int(gb * 1e9) // ((WIDTH + 1) * 4)
        source = os.path.join(root, "big.npz")
        t0 = time.perf_counter()
        write_npz(source, rows)
        generated = time.perf_counter() - t0
        pids = {name: proc.pid for name, proc in stack.procs.items()}
        collect = collect_pb2_grpc.CollectServiceStub(channels.channel("collect", env))
        process = process_pb2_grpc.ProcessServiceStub(channels.channel("process", env))
        phases = {}
        with PeakRss(pids) as rss:
            t0 = time.perf_counter()
            last = None
            for last in collect.Ingest(  # noqa: B007 (drains the stream; the last message is read after the loop)
                collect_pb2.IngestRequest(dataset="big", source=pipeline_pb2.CollectSpec(source=source, format="npz")),
                timeout=7200,
            ):
                pass
            ingested = time.perf_counter() - t0
            phases["ingest"] = dict(rss.peak)
            ref = last.dataset.ref
            t0 = time.perf_counter()
            fit = process.Fit(
                process_pb2.FitRequest(dataset=ref, ops=[pipeline_pb2.Op(standardize=pipeline_pb2.StandardizeOp())]),
                timeout=7200,
            )
            fitted = time.perf_counter() - t0
            phases["fit"] = dict(rss.peak)
            t0 = time.perf_counter()
            received = seen = 0
            for response in process.Process(
                process_pb2.ProcessRequest(dataset=ref, ops=fit.ops, batch_size=256), timeout=7200
            ):
                features = response.batch.tensors["features"]
                received += len(features.content) + len(response.batch.tensors["label"].content)
                seen += features.shape[0]
            streamed = time.perf_counter() - t0
        assert seen == rows, (seen, rows)
        return {
            "gb": gb,
            "rows": rows,
            "shards": last.dataset.num_shards,
            "generate_s": generated,
            "ingest_s": ingested,
            "fit_s": fitted,
            "stream_s": streamed,
            "stream_mbs": received / streamed / 1e6,
            "growth_mb": {name: rss.peak[name] - rss.base[name] for name in pids},
            "base_mb": rss.base,
            "phases": {phase: {n: peak[n] - rss.base[n] for n in pids} for phase, peak in phases.items()},
        }
    finally:
        stack.stop_all()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def write_csv(path: str, megabytes: float) -> int:
    """A CSV of 16 float columns and a label column, about `megabytes` MB; returns its rows."""
    rng = np.random.default_rng(1)
    header = ",".join(f"f{i}" for i in range(16)) + ",label\n"
    rows = 0
    with open(path, "w") as f:
        f.write(header)
        while f.tell() < megabytes * 1e6:
            block = rng.random((CHUNK_ROWS, 16), dtype=np.float32)
            labels = rng.integers(0, 10, CHUNK_ROWS)
            f.write(
                "".join(
                    ",".join(f"{v:.5f}" for v in row) + f",c{label}\n" for row, label in zip(block, labels, strict=True)
                )
            )
            rows += CHUNK_ROWS
    return rows


def folder_mb(path: str, only: str = "") -> float:
    """MB of the files under path (only those under a folder whose name starts with `only`)."""
    total = 0
    for folder, _dirs, names in os.walk(path):
        if only and not any(part.startswith(only) for part in folder.split(os.sep)):
            continue
        for name in names:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                pass  # a file removed while walking
    return total / 1e6


def run_s3_csv(megabytes: float, keep: bool) -> dict:
    """Ingests an s3:// CSV of about `megabytes` MB from SeaweedFS; collect's RSS and scratch disk peaks."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from s3server import SeaweedS3
    from services.common.store import S3Store

    root = scratch("cookline-bench-s3csv-")
    tmp = os.path.join(root, "collect-tmp")
    os.makedirs(tmp)
    try:
        with SeaweedS3() as s3:
            bucket = "bench-" + os.urandom(4).hex()
            source = os.path.join(root, "big.csv")
            rows = write_csv(source, megabytes)
            size_mb = os.path.getsize(source) / 1e6
            S3Store(s3.endpoint, s3.access_key, s3.secret_key, bucket).put_file("incoming/big.csv", source)
            if not keep:
                os.remove(source)
            stack, env = data_plane(os.path.join(root, "store"), dict(s3.env(bucket), TMPDIR=tmp))
            try:
                collect = collect_pb2_grpc.CollectServiceStub(channels.channel("collect", env))
                pid = stack.procs["collect"].pid
                disk = {"peak": 0.0, "source": 0.0}
                with PeakRss({"collect": pid}) as rss:
                    stop = threading.Event()

                    def watch_disk():
                        while not stop.is_set():
                            disk["peak"] = max(disk["peak"], folder_mb(tmp))
                            # where an s3:// source used to be copied before it was read
                            disk["source"] = max(disk["source"], folder_mb(tmp, "cookline-ingest-"))
                            stop.wait(0.1)  # sampling period

                    watcher = threading.Thread(target=watch_disk, daemon=True)
                    watcher.start()
                    t0 = time.perf_counter()
                    last = None
                    request = collect_pb2.IngestRequest(
                        dataset="big-csv",
                        source=pipeline_pb2.CollectSpec(source=f"s3://{bucket}/incoming/big.csv", label="label"),
                    )
                    for last in collect.Ingest(request, timeout=7200):  # noqa: B007 (drains the stream; the last message is read after the loop)
                        pass
                    ingested = time.perf_counter() - t0
                    stop.set()
                    watcher.join()
                assert last.dataset.num_rows == rows, (last.dataset.num_rows, rows)
                return {
                    "mb": size_mb,
                    "rows": rows,
                    "ingest_s": ingested,
                    "growth_mb": rss.peak["collect"] - rss.base["collect"],
                    "base_mb": rss.base["collect"],
                    "scratch_peak_mb": disk["peak"],
                    "source_copy_mb": disk["source"],
                }
            finally:
                stack.stop_all()
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, nargs="+", default=[1, 4], help="dataset sizes in GB")
    parser.add_argument("--keep", action="store_true", help="keep the generated data and store")
    parser.add_argument("--s3-csv-mb", type=float, default=512, help="size of the s3:// CSV in MB (0: skip)")
    args = parser.parse_args()
    for gb in args.gb:
        r = run(gb, args.keep)
        growth = ", ".join(
            f"{name} +{mb:.0f} MB (idle {r['base_mb'][name]:.0f} MB)" for name, mb in r["growth_mb"].items()
        )
        ok = all(mb <= 256 for mb in r["growth_mb"].values())
        print(
            f"{gb:g} GB ({r['rows']} rows x {WIDTH} float32, {r['shards']} shards): "
            f"ingest {r['ingest_s']:.0f} s, fit {r['fit_s']:.0f} s, stream {r['stream_s']:.0f} s "
            f"({r['stream_mbs']:.0f} MB/s)"
        )
        print(f"  peak RSS growth: {growth} -> {'within' if ok else 'OVER'} the 256 MB target")
        for phase, peaks in r["phases"].items():
            print(f"    peak by the end of {phase}: " + ", ".join(f"{n} +{mb:.0f} MB" for n, mb in peaks.items()))

    if args.s3_csv_mb:
        r = run_s3_csv(args.s3_csv_mb, args.keep)
        print(
            f"s3:// CSV {r['mb']:.0f} MB ({r['rows']} rows x 16 columns), streamed from SeaweedFS: "
            f"ingest {r['ingest_s']:.0f} s ({r['mb'] / r['ingest_s']:.1f} MB/s)"
        )
        print(
            f"  collect peak RSS growth +{r['growth_mb']:.0f} MB (idle {r['base_mb']:.0f} MB) -> "
            f"{'within' if r['growth_mb'] <= 256 else 'OVER'} the 256 MB target; "
            f"peak scratch disk {r['scratch_peak_mb']:.1f} MB (shards being written), of it "
            f"{r['source_copy_mb']:.1f} MB for the source (the object is never copied)"
        )


if __name__ == "__main__":
    main()
