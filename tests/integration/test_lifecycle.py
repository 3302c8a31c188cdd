"""Every service's shared bootstrap: message limits from one setting, clean SIGTERM shutdown."""

import os
import signal

import grpc
import pytest

from cookline.stack import Stack
from cookline.v1 import collect_pb2, collect_pb2_grpc, data_pb2
from helpers import free_ports


def test_oversized_request_is_refused_and_sigterm_stops_cleanly(tmp_path):
    (port,) = free_ports(1, set())
    env = dict(
        os.environ,
        COOKLINE_COLLECT_ADDR=f"127.0.0.1:{port}",
        COOKLINE_MAX_MESSAGE_MB="1",
        COOKLINE_DATA_DIR=str(tmp_path / "store"),
    )
    env.pop("MINIO_ENDPOINT", None)
    with Stack(env, log_dir=str(tmp_path / "logs")) as stack:
        stack.start("collect")
        stack.wait_healthy(timeout=60)
        collect = collect_pb2_grpc.CollectServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        huge = collect_pb2.GetDatasetRequest(dataset=data_pb2.DatasetRef(name="x" * (2 << 20)))
        with pytest.raises(grpc.RpcError) as info:
            collect.GetDataset(huge, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # still serving after refusing it
        with pytest.raises(grpc.RpcError) as info:
            collect.GetDataset(collect_pb2.GetDatasetRequest(dataset=data_pb2.DatasetRef(name="x")), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert stack.stop("collect", signal.SIGTERM, timeout=20) == 0
    log = (tmp_path / "logs" / "collect.log").read_text()
    assert "SIGTERM received" in log and "collect stopped" in log
