"""Flow control is the backpressure: a deliberately slow reader of process's stream must not make
collect (or process) run ahead without bound. Real processes on S3; collect logs each shard it has
finished streaming (DEBUG), which is how far the producer side has got."""

import os
import time

import numpy as np

from cookline import channels, config, tensors
from cookline.v1 import collect_pb2, collect_pb2_grpc, process_pb2, process_pb2_grpc
from dataplane import start_data_plane

SHARD_MB = 1
DATASET_MB = 64
# The fixed stream windows of two data-plane hops (collect -> process, process -> this reader, which
# pulls as train does), plus the message in each service's hands and collect's prefetched shard:
# a bound whatever the dataset size or the machine's load. The dataset is far larger than this.
MAX_LEAD_MB = 2 * config.STREAM_WINDOW_BYTES / 2**20 + 8


def test_slow_reader_keeps_the_producers_bounded(s3_server, tmp_path):
    logs = str(tmp_path / "logs")
    running, env = start_data_plane(s3_server, logs, COOKLINE_SHARD_MB=str(SHARD_MB), COOKLINE_LOG_LEVEL="DEBUG")
    with running:
        rows, width = 256, 784
        count = DATASET_MB * 10**6 // (rows * width * 4)

        def messages():
            yield collect_pb2.UploadDatasetRequest(dataset="slow", class_names=["a", "b"])
            for i in range(count):
                yield collect_pb2.UploadDatasetRequest(
                    batch=tensors.batch_from_numpy(
                        {"features": np.full((rows, width), i, np.float32), "label": np.zeros(rows, np.int32)}, i
                    )
                )

        info = (
            collect_pb2_grpc.CollectServiceStub(channels.channel("collect", env))
            .UploadDataset(messages(), timeout=300)
            .dataset
        )
        assert info.num_shards >= DATASET_MB * 0.9 / SHARD_MB
        rows_per_shard = info.num_rows / info.num_shards
        row_mb = (width + 1) * 4 / 1e6

        def shards_streamed():
            with open(os.path.join(logs, "collect.log")) as f:
                return f.read().count(" streamed")

        process = process_pb2_grpc.ProcessServiceStub(
            channels.channel("process", env, options=config.data_plane_options(env))
        )
        call = process.Process(process_pb2.ProcessRequest(dataset=info.ref, batch_size=rows), timeout=300)
        leads = []
        try:
            for i, _response in enumerate(call):
                consumed = (i + 1) * rows
                leads.append((shards_streamed() * rows_per_shard - consumed) * row_mb)
                if i == 20:
                    break
                time.sleep(0.1)  # the deliberately slow reader
        finally:
            call.cancel()
        # The producers ran ahead (the pipeline is not lock-step) but only by a bounded amount,
        # which does not grow as the reader goes on.
        assert max(leads) <= MAX_LEAD_MB, leads
        consumed_mb = len(leads) * rows * row_mb
        assert shards_streamed() * SHARD_MB <= consumed_mb + MAX_LEAD_MB < DATASET_MB
        assert all(lead <= MAX_LEAD_MB for lead in leads[-5:])
        # the cancelled read stopped collect too: it streams no further shards
        stopped = shards_streamed()
        assert stopped < info.num_shards
