"""Keepalive is tuned: a stream that stays idle for many keepalive periods (as a stream does
while an epoch computes) is not cut. Clients ping after COOKLINE_KEEPALIVE_S of silence and
servers accept those pings; gRPC's default server policy (one ping per 5 minutes) answers
them with GOAWAY "too_many_pings": the connection is closed once its open streams end, and the
client halves its ping rate."""

import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest

from cookline import channels, config, tensors
from cookline.v1 import collect_pb2, collect_pb2_grpc
from dataplane import start_data_plane
from services.collect.service import CollectServicer
from services.common.store import LocalStore

KEEPALIVE_S = 1
IDLE_S = 6 * KEEPALIVE_S  # the condition: idle much longer than keepalive_time
ROWS = 64


def test_an_idle_stream_outlives_many_keepalive_periods(s3_server, tmp_path):
    running, env = start_data_plane(s3_server, str(tmp_path / "logs"), COOKLINE_KEEPALIVE_S=str(KEEPALIVE_S))
    assert dict(config.grpc_options(env))["grpc.keepalive_time_ms"] == KEEPALIVE_S * 1000
    rows = 64
    with running:

        def messages():
            yield collect_pb2.UploadDatasetRequest(dataset="idle", class_names=["a", "b"])
            yield collect_pb2.UploadDatasetRequest(
                batch=tensors.batch_from_numpy(
                    {"features": np.ones((rows, 3), np.float32), "label": np.zeros(rows, np.int32)}, 0
                )
            )
            threading.Event().wait(IDLE_S)  # the stream is open and silent: only keepalive pings flow
            yield collect_pb2.UploadDatasetRequest(
                batch=tensors.batch_from_numpy(
                    {"features": np.ones((rows, 3), np.float32), "label": np.ones(rows, np.int32)}, 1
                )
            )

        info = (
            collect_pb2_grpc.CollectServiceStub(channels.channel("collect", env))
            .UploadDataset(messages(), timeout=120)
            .dataset
        )
        assert info.num_rows == 2 * rows


SERVER_PING_POLICY = "grpc.http2.min_ping_interval_without_data_ms"


@pytest.mark.parametrize("policy", ["cookline", "grpc-default"])
def test_pings_of_an_idle_stream_get_goaway_too_many_pings_only_without_the_server_ping_policy(policy, tmp_path, capfd):
    """The same idle upload against a collect server with cookline's options, and with the same options
    minus the server ping policy (gRPC's default: one ping per 5 minutes without data). Without it the
    server answers the keepalive pings with GOAWAY "too_many_pings" (ENHANCE_YOUR_CALM);
    with it the connection stays READY and no GOAWAY is sent."""
    env = {"COOKLINE_KEEPALIVE_S": str(KEEPALIVE_S)}
    options = config.grpc_options(env)
    if policy == "grpc-default":
        options = [o for o in options if o[0] != SERVER_PING_POLICY]
    server = grpc.server(futures.ThreadPoolExecutor(4), options=options)
    collect_pb2_grpc.add_CollectServiceServicer_to_server(CollectServicer(LocalStore(str(tmp_path / "store"))), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    states, left_ready = [], threading.Event()

    def on_state(state):
        states.append(state)
        if grpc.ChannelConnectivity.READY in states and state != grpc.ChannelConnectivity.READY:
            left_ready.set()

    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=config.client_options(env))
    channel.subscribe(on_state, try_to_connect=True)
    try:
        info = collect_pb2_grpc.CollectServiceStub(channel).UploadDataset(_idle_upload(), timeout=120).dataset
        assert info.num_rows == 2 * ROWS  # an open stream is let finish either way
        if policy == "grpc-default":
            # The GOAWAY is the behaviour; gRPC core logs it. The connection's leaving READY is not
            # asserted: Python samples connectivity states, and on a quick reconnect it can miss the
            # moment between READY and READY.
            err, deadline = "", time.monotonic() + 30
            while "too_many_pings" not in err and time.monotonic() < deadline:
                left_ready.wait(0.5)
                err += capfd.readouterr().err
            assert "too_many_pings" in err, f"no GOAWAY too_many_pings; states {states}"
        else:
            assert not left_ready.is_set(), f"the connection left READY: {states}"
            assert "too_many_pings" not in capfd.readouterr().err
    finally:
        channel.unsubscribe(on_state)
        channel.close()
        server.stop(0)


def _idle_upload():
    yield collect_pb2.UploadDatasetRequest(dataset="idle", class_names=["a", "b"])
    yield collect_pb2.UploadDatasetRequest(
        batch=tensors.batch_from_numpy(
            {"features": np.ones((ROWS, 3), np.float32), "label": np.zeros(ROWS, np.int32)}, 0
        )
    )
    threading.Event().wait(IDLE_S)  # open and silent: only keepalive pings flow
    yield collect_pb2.UploadDatasetRequest(
        batch=tensors.batch_from_numpy(
            {"features": np.ones((ROWS, 3), np.float32), "label": np.ones(ROWS, np.int32)}, 1
        )
    )
