"""Starting collect and process alone (the `data_plane` fixture), and calling them."""

from __future__ import annotations

import os

import grpc
import numpy as np

from cookline import channels, tensors
from cookline.v1 import collect_pb2, collect_pb2_grpc, data_pb2, pipeline_pb2
from helpers import free_ports, unique_bucket


def start_data_plane(s3_server, log_dir: str, **extra_env):
    """collect and process only, as real processes on free ports, on S3 (SeaweedFS); a Stack to stop."""
    from cookline.stack import Stack

    ports = free_ports(2, set(s3_server.ports.values()))
    env = dict(os.environ)
    env.update(s3_server.env(unique_bucket("dp")))
    env["COOKLINE_COLLECT_ADDR"] = f"127.0.0.1:{ports[0]}"
    env["COOKLINE_PROCESS_ADDR"] = f"127.0.0.1:{ports[1]}"
    env["COOKLINE_SHARD_MB"] = "0.05"  # ~50 KB shards: small test data still spans several
    env.update(extra_env)
    running = Stack(env, log_dir=log_dir)
    running.start("collect")
    running.start("process")
    try:
        running.wait_healthy(timeout=60)
    except BaseException:
        running.stop_all()
        raise
    return running, env


def collect_stub(env) -> collect_pb2_grpc.CollectServiceStub:
    return collect_pb2_grpc.CollectServiceStub(channels.channel("collect", env))


def ingest(env, name: str, source: str, strict: bool = False, **spec):
    """Runs Ingest; returns the last response (raises grpc.RpcError on failure)."""
    request = collect_pb2.IngestRequest(
        dataset=name, source=pipeline_pb2.CollectSpec(source=str(source), **spec), strict=strict
    )
    last = None
    for last in collect_stub(env).Ingest(request, timeout=120):  # noqa: B007 (drains the stream; the last message is read after the loop)
        pass
    return last


def ingest_error(env, name: str, source: str, **spec) -> grpc.RpcError:
    try:
        ingest(env, name, source, **spec)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("ingest succeeded, expected an error")


def read_all(env, ref, subset=data_pb2.SUBSET_UNSPECIFIED, split=None, batch_size=64) -> dict[str, np.ndarray]:
    """Every row of a dataset version (or subset) concatenated by tensor."""
    parts: dict[str, list] = {}
    request = collect_pb2.ReadDatasetRequest(dataset=ref, subset=subset, split=split, batch_size=batch_size)
    for response in collect_stub(env).ReadDataset(request, timeout=120):
        for name, array in tensors.batch_to_numpy(response.batch).items():
            parts.setdefault(name, []).append(array)
    return {k: np.concatenate(v) for k, v in parts.items()}


def versions(env, name: str) -> list[data_pb2.DatasetInfo]:
    return list(collect_stub(env).ListDatasets(collect_pb2.ListDatasetsRequest(name=name), timeout=30).datasets)
