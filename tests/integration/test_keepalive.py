"""Keepalive is tuned: a stream that stays idle for many keepalive periods (as a stream does
while an epoch computes) is not cut. Clients ping after COOKLINE_KEEPALIVE_S of silence and
servers accept those pings; gRPC's default server policy (one ping per 5 minutes) would answer
them with GOAWAY "too_many_pings" and drop the connection with its streams."""
import threading

import numpy as np

from cookline import channels, config, tensors
from cookline.v1 import collect_pb2, collect_pb2_grpc
from dataplane import start_data_plane

KEEPALIVE_S = 1
IDLE_S = 6 * KEEPALIVE_S  # the condition: idle much longer than keepalive_time


def test_an_idle_stream_outlives_many_keepalive_periods(s3_server, tmp_path):
    running, env = start_data_plane(s3_server, str(tmp_path / "logs"), COOKLINE_KEEPALIVE_S=str(KEEPALIVE_S))
    assert dict(config.grpc_options(env))["grpc.keepalive_time_ms"] == KEEPALIVE_S * 1000
    rows = 64
    with running:
        def messages():
            yield collect_pb2.UploadDatasetRequest(dataset="idle", class_names=["a", "b"])
            yield collect_pb2.UploadDatasetRequest(batch=tensors.batch_from_numpy(
                {"features": np.ones((rows, 3), np.float32), "label": np.zeros(rows, np.int32)}, 0))
            threading.Event().wait(IDLE_S)  # the stream is open and silent: only keepalive pings flow
            yield collect_pb2.UploadDatasetRequest(batch=tensors.batch_from_numpy(
                {"features": np.ones((rows, 3), np.float32), "label": np.ones(rows, np.int32)}, 1))

        info = collect_pb2_grpc.CollectServiceStub(channels.channel("collect", env)).UploadDataset(
            messages(), timeout=120).dataset
        assert info.num_rows == 2 * rows
