"""ProcessService: fits ops on the TRAIN split and applies them to batches pulled from collect."""
from __future__ import annotations

import logging
from typing import Iterator

from cookline import channels, tensors
from cookline.v1 import collect_pb2, collect_pb2_grpc, data_pb2, process_pb2, process_pb2_grpc
from services.common.errors import invalid, remaining, rpc
from services.process import ops as ops_lib

log = logging.getLogger("cookline.process")

DEFAULT_BATCH = 256
MAX_BATCH = 1 << 20
# Rows per batch pulled from collect: large messages amortise per-message cost.
PULL_BATCH = 4096


class ProcessServicer(process_pb2_grpc.ProcessServiceServicer):
    def __init__(self):
        self.collect = collect_pb2_grpc.CollectServiceStub(channels.channel("collect"))

    def _pull(self, dataset, split, subset, context) -> Iterator[dict]:
        """Batches of one subset, streamed from collect; cancelled with our caller."""
        call = self.collect.ReadDataset(
            collect_pb2.ReadDatasetRequest(dataset=dataset, split=split, subset=subset, batch_size=PULL_BATCH),
            timeout=remaining(context))
        context.add_callback(call.cancel)  # our caller gone -> stop collect too
        for response in call:
            yield tensors.batch_to_numpy(response.batch)

    @rpc
    def Fit(self, request: process_pb2.FitRequest, context) -> process_pb2.FitResponse:
        ops_lib.validate(request.ops)
        # One pass over the TRAIN rows per op that needs fitting (each sees the ops before it applied).
        fitted, rows = ops_lib.fit(list(request.ops),
                                   lambda: self._pull(request.dataset, request.split, data_pb2.SUBSET_TRAIN, context))
        log.info("fitted %d ops on %d rows of %s", len(fitted), rows, request.dataset.name)
        return process_pb2.FitResponse(ops=fitted, rows=rows)

    @rpc
    def Process(self, request: process_pb2.ProcessRequest, context) -> Iterator[process_pb2.ProcessResponse]:
        ops_lib.validate(request.ops)
        batch_size = request.batch_size or DEFAULT_BATCH
        if not 1 <= batch_size <= MAX_BATCH:
            raise invalid(f"batch_size: {batch_size} is not in [1, {MAX_BATCH}]")
        source = self._pull(request.dataset, request.split, request.subset, context)
        training = request.subset == data_pb2.SUBSET_TRAIN  # random augmentation runs on TRAIN rows only
        for sequence, batch in enumerate(ops_lib.apply(list(request.ops), source, request.epoch, batch_size,
                                                       training)):
            yield process_pb2.ProcessResponse(batch=tensors.batch_from_numpy(batch, sequence))
