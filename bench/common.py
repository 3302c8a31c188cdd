"""Shared by the benchmarks: a collect + process pair as real processes, uploads, RSS."""

from __future__ import annotations

import os
import socket
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))

import numpy as np

from cookline import channels, tensors
from cookline.stack import Stack
from cookline.v1 import collect_pb2, collect_pb2_grpc

ROWS, WIDTH = 256, 784  # one batch: 256 x 784 float32 = 784 KiB


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def data_plane(store_dir: str, extra_env: dict | None = None) -> tuple[Stack, dict]:
    """collect and process on the local store in store_dir, started and healthy."""
    collect, process = free_ports(2)
    env = dict(
        os.environ,
        COOKLINE_DATA_DIR=store_dir,
        COOKLINE_COLLECT_ADDR=f"127.0.0.1:{collect}",
        COOKLINE_PROCESS_ADDR=f"127.0.0.1:{process}",
        COOKLINE_LOG_LEVEL="WARNING",
        # generated sources sit beside the store
        COOKLINE_SOURCE_ROOTS=os.path.dirname(os.path.abspath(store_dir)),
    )
    env.pop("MINIO_ENDPOINT", None)
    env.update(extra_env or {})
    stack = Stack(env, log_dir=os.path.join(store_dir, "logs"))
    stack.start("collect")
    stack.start("process")
    stack.wait_healthy(60)
    return stack, env


def batch(seed: int, rows: int = ROWS, width: int = WIDTH) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "features": rng.random((rows, width), dtype=np.float32),
        "label": rng.integers(0, 10, rows).astype(np.int32),
    }


def upload(env: dict, name: str, total_bytes: int, distinct: int = 16) -> collect_pb2.UploadDatasetResponse:
    """Uploads about total_bytes of 256x784 float32 batches (cycling `distinct` different ones)."""
    pool = [batch(i) for i in range(distinct)]
    count = max(1, total_bytes // pool[0]["features"].nbytes)

    def messages():
        yield collect_pb2.UploadDatasetRequest(dataset=name, class_names=[str(i) for i in range(10)])
        for i in range(count):
            arrays = dict(pool[i % distinct])
            arrays["features"] = arrays["features"] + np.float32(i)  # every batch distinct content
            yield collect_pb2.UploadDatasetRequest(batch=tensors.batch_from_numpy(arrays, i))

    stub = collect_pb2_grpc.CollectServiceStub(channels.channel("collect", env))
    return stub.UploadDataset(messages(), timeout=3600)


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process so far, all its threads (None: this process)."""
    if pid is None:
        return sum(os.times()[:2])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scratch(prefix: str) -> str:
    """A fresh folder for a benchmark's store and data, under $TMPDIR (tempfile's rules)."""
    return tempfile.mkdtemp(prefix=prefix)
