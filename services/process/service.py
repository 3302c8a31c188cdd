"""ProcessService: fits ops on the TRAIN split and applies them to batches pulled from collect."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from cookline import channels, config, tensors
from cookline.v1 import collect_pb2, collect_pb2_grpc, data_pb2, process_pb2, process_pb2_grpc
from services.common import partition, splits
from services.common.errors import invalid, remaining, rpc
from services.process import ops as ops_lib

log = logging.getLogger("cookline.process")

DEFAULT_BATCH = 256
MAX_BATCH = 1 << 20
# Rows per batch pulled from collect when ops run: large enough to amortise per-message cost,
# small enough that an op's float64 temporaries stay small on wide rows (784 floats: 3 MB).
PULL_BATCH = 1024


class ProcessServicer(process_pb2_grpc.ProcessServiceServicer):
    def __init__(self):
        channel = channels.channel("collect", options=config.data_plane_options())
        self.collect = collect_pb2_grpc.CollectServiceStub(channel)
        # ReadDataset with the responses left as bytes, for forwarding them unchanged.
        self.read_raw = channel.unary_stream(
            "/cookline.v1.CollectService/ReadDataset",
            request_serializer=collect_pb2.ReadDatasetRequest.SerializeToString,
            response_deserializer=None,
        )

    def _call(self, dataset, split, subset, batch_size, context, raw: bool = False, part=None):
        """The ReadDataset stream of one subset (or part of it); cancelled with our caller. raw: messages as bytes."""
        read = self.read_raw if raw else self.collect.ReadDataset
        call = read(
            collect_pb2.ReadDatasetRequest(
                dataset=dataset, split=split, subset=subset, batch_size=batch_size, partition=part
            ),
            timeout=remaining(context),
        )
        context.add_callback(call.cancel)  # our caller gone -> stop collect too
        return call

    def _pull(self, dataset, split, subset, context, part=None) -> Iterator[dict]:
        """Batches of one subset (or part of it), streamed from collect: views of the messages' bytes
        (tensors.decode_batch; parsing them as protobuf messages first would copy every tensor)."""
        for message in self._call(dataset, split, subset, PULL_BATCH, context, raw=True, part=part):
            yield tensors.decode_batch(message)[0]

    @rpc
    def Fit(self, request: process_pb2.FitRequest, context) -> process_pb2.FitResponse:
        ops_lib.validate(request.ops)
        if not ops_lib.needs_fit(request.ops):
            return process_pb2.FitResponse(ops=request.ops, rows=0)  # nothing to learn: no pass over the data
        # One pass over the TRAIN rows per op that needs fitting (each sees the ops before it applied).
        fitted, rows = ops_lib.fit(
            list(request.ops),
            lambda: self._pull(request.dataset, request.split, data_pb2.SUBSET_TRAIN, context),
            self._feature_columns(request, context),
        )
        log.info("fitted %d ops on %d rows of %s", len(fitted), rows, request.dataset.name)
        return process_pb2.FitResponse(ops=fitted, rows=rows)

    def _feature_columns(self, request, context) -> list[str] | None:
        """The dataset's numeric column names, when an op is scoped to columns by name (else None)."""
        if not any(
            op.WhichOneof("kind") in ops_lib.SCOPED and len(getattr(op, op.WhichOneof("kind")).columns)
            for op in request.ops
        ):
            return None
        info = self.collect.GetDataset(
            collect_pb2.GetDatasetRequest(dataset=request.dataset), timeout=remaining(context)
        ).dataset
        return next((list(f.columns) for f in info.fields if f.name == "features"), [])

    @rpc
    def Process(self, request: process_pb2.ProcessRequest, context) -> Iterator[bytes]:
        # Yields pre-encoded ProcessResponse messages (the server's serializer passes bytes through).
        ops_lib.validate(request.ops)
        batch_size = request.batch_size or DEFAULT_BATCH
        if not 1 <= batch_size <= MAX_BATCH:
            raise invalid(f"batch_size: {batch_size} is not in [1, {MAX_BATCH}]")
        index, count = partition.check(request.partition)
        ops = ops_lib.for_partition(request.ops, index) if count > 1 else list(request.ops)
        training = request.subset == data_pb2.SUBSET_TRAIN  # random augmentation runs on TRAIN rows only
        if not ops_lib.changes_data(ops, training):
            # Nothing to do to the rows: collect batches them as asked, and its messages (the same wire
            # format as ProcessResponse) are forwarded as they are, never decoded or re-encoded.
            yield from self._call(
                request.dataset, request.split, request.subset, batch_size, context, raw=True, part=request.partition
            )
            return
        rows = None
        if count > 1:  # the part's batch sizes depend on the subset's row count
            info = self.collect.GetDataset(
                collect_pb2.GetDatasetRequest(dataset=request.dataset), timeout=remaining(context)
            ).dataset
            rows = splits.subset_rows(info, request.split)[request.subset]
        source = self._pull(request.dataset, request.split, request.subset, context, part=request.partition)
        batches = partition.cut(
            ops_lib.chain(ops, source, request.epoch, training), partition.plan(rows, request.partition, batch_size)
        )
        for sequence, batch in enumerate(batches):
            yield tensors.encode_batch(batch, sequence)  # a pre-encoded ProcessResponse
