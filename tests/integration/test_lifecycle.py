"""Every service's shared bootstrap: message limits from one setting (oversized messages refused within a
memory bound), clean SIGTERM shutdown."""

import os
import signal
import threading

import grpc
import numpy as np
import pytest

from cookline import channels, tensors
from cookline.stack import Stack
from cookline.v1 import collect_pb2, collect_pb2_grpc, data_pb2, serve_pb2, serve_pb2_grpc
from error_catalogue import FAULT_CASES
from helpers import free_ports, rss_mb


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


# What refusing bursts of oversized messages may add to a server's resident memory, in MB per stream sending
# them at once (the bound docs/configuration.md states beside COOKLINE_MAX_MESSAGE_MB): gRPC refuses a
# message once its length is known, but a stream's flow-control window of bytes is read meanwhile.
OVERSIZED_BOUND_MB_PER_STREAM = 24
OVERSIZED = FAULT_CASES[2]  # its row of docs/errors.md
STREAMS, PER_STREAM, MESSAGE_MB = 8, 4, 80  # each burst: 8 streams at once, 4 messages of 80 MB each


def _oversized(service: str):
    """One message of MESSAGE_MB for `service`'s client-streaming call: (method stub maker, message)."""
    rows = np.zeros((MESSAGE_MB << 18, 1), np.float32)  # MESSAGE_MB MiB of float32
    if service == "collect":
        message = collect_pb2.UploadDatasetRequest(dataset="huge", batch=tensors.batch_from_numpy({"x": rows}, 0))
        return lambda channel: collect_pb2_grpc.CollectServiceStub(channel).UploadDataset, message
    message = serve_pb2.PredictStreamRequest(correlation_id="0")
    message.request.model.name = "huge"
    tensors.from_numpy(rows, out=message.request.inputs["features"])
    return lambda channel: serve_pb2_grpc.ServeServiceStub(channel).PredictStream, message


def _burst(call, message) -> set[str]:
    """STREAMS streams at once, each sending PER_STREAM copies of `message`; the status each ended with
    (and whether its message says so: docs/errors.md)."""
    codes: list[str] = []

    def stream():
        try:
            answer = call(iter([message] * PER_STREAM), timeout=300)
            for _ in answer if hasattr(answer, "__iter__") else ():
                pass
            codes.append("OK")
        except grpc.RpcError as exc:
            codes.append(exc.code().name + ("" if OVERSIZED.message in (exc.details() or "") else " (other message)"))

    threads = [threading.Thread(target=stream) for _ in range(STREAMS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return set(codes)


@pytest.mark.parametrize("service", ["collect", "serve"])
def test_streams_of_oversized_messages_are_refused_within_the_memory_bound(tmp_path, service):
    ports = free_ports(2, set())
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIO_")}
    env.update(
        {
            f"COOKLINE_{service.upper()}_ADDR": f"127.0.0.1:{ports[0]}",
            f"COOKLINE_{service.upper()}_HTTP_ADDR": f"127.0.0.1:{ports[1]}",
            "COOKLINE_DATA_DIR": str(tmp_path / "store"),
        }
    )
    # a sender without the send limit, so the server's own receive limit is what refuses
    channel = grpc.insecure_channel(f"127.0.0.1:{ports[0]}", options=[("grpc.max_send_message_length", -1)])
    make_call, message = _oversized(service)
    call = make_call(channel)
    with Stack(env, log_dir=str(tmp_path / "logs")) as stack:
        stack.start(service)
        stack.wait_healthy(timeout=180)
        pid = stack.procs[service].pid
        assert _burst(call, message) == {"RESOURCE_EXHAUSTED"}  # warm-up: thread pools reach their size
        before = rss_mb(pid)
        for _ in range(5):  # without a bound on malloc's arenas, RSS rose with every burst
            assert _burst(call, message) == {"RESOURCE_EXHAUSTED"}
        grown = rss_mb(pid) - before
        bound = OVERSIZED_BOUND_MB_PER_STREAM * STREAMS
        assert grown <= bound, f"{service} grew {grown:.0f} MB (bound {bound}) refusing oversized messages"
        assert stack.exited() == {}
        channels.wait_healthy(f"127.0.0.1:{ports[0]}", timeout=30, env=env)  # and still serves
    channel.close()
