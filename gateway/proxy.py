"""The gateway's proxies: cookline.v1.ServeService's Predict, PredictStream and
GetModelMetadata forwarded to serve, and CollectService's UploadDataset,
GetDataset and ListDatasets forwarded to collect, so a client needs only the
gateway's address.

Messages are forwarded as raw bytes (never parsed), so the proxy costs one
extra hop and no (de)serialisation. The caller's deadline is passed on,
cancelling the caller's call cancels the call to serve, and serve's status
codes reach the caller unchanged. The other ServeService RPCs (LoadModel,
UnloadModel, GetStats) are operator calls made to serve directly; on the
gateway they answer UNIMPLEMENTED. Its RegistryService's DeployModel and
UndeployModel make LoadModel and UnloadModel on every serve replica
(gateway/replicas.py).
"""

from __future__ import annotations

import grpc

from cookline import channels
from cookline.v1 import collect_pb2, serve_pb2
from services.common.errors import remaining

SERVICE = serve_pb2.DESCRIPTOR.services_by_name["ServeService"].full_name
UNARY = ("Predict", "GetModelMetadata")
STREAM = ("PredictStream",)


def _forward_error(exc: grpc.RpcError, context: grpc.ServicerContext):
    context.abort(exc.code(), exc.details() or exc.code().name)


class ServeProxy:
    """Builds the generic handler that forwards to serve's channel."""

    service = SERVICE
    peer = "serve"
    unary: tuple[str, ...] = UNARY
    stream: tuple[str, ...] = STREAM
    client_stream: tuple[str, ...] = ()

    def __init__(self, channel: grpc.Channel | None = None):
        self.channel = channel or channels.channel(self.peer)

    def _unary(self, method: str):
        call = self.channel.unary_unary(f"/{self.service}/{method}")  # bytes in, bytes out

        def handle(request: bytes, context):
            try:
                return call(request, timeout=remaining(context), metadata=_metadata(context))
            except grpc.RpcError as exc:
                _forward_error(exc, context)

        return grpc.unary_unary_rpc_method_handler(handle)

    def _stream(self, method: str):
        call = self.channel.stream_stream(f"/{self.service}/{method}")

        def handle(request_iterator, context):
            upstream = call(request_iterator, timeout=remaining(context), metadata=_metadata(context))
            context.add_callback(upstream.cancel)  # the caller went away: so does the call to serve
            try:
                yield from upstream
            except grpc.RpcError as exc:
                if context.is_active():
                    _forward_error(exc, context)

        return grpc.stream_stream_rpc_method_handler(handle)

    def _client_stream(self, method: str):
        call = self.channel.stream_unary(f"/{self.service}/{method}")

        def handle(request_iterator, context):
            upstream = call.future(request_iterator, timeout=remaining(context), metadata=_metadata(context))
            context.add_callback(upstream.cancel)  # a caller that breaks off: nothing is published
            try:
                return upstream.result()
            except grpc.RpcError as exc:
                _forward_error(exc, context)

        return grpc.stream_unary_rpc_method_handler(handle)

    def handler(self) -> grpc.GenericRpcHandler:
        methods = (
            {m: self._unary(m) for m in self.unary}
            | {m: self._stream(m) for m in self.stream}
            | {m: self._client_stream(m) for m in self.client_stream}
        )
        return grpc.method_handlers_generic_handler(self.service, methods)


class CollectProxy(ServeProxy):
    """The dataset catalog and uploads (CollectService's GetDataset, ListDatasets, UploadDataset)
    forwarded to collect, so a client on another machine uploads through the gateway's address.
    Ingest and ReadDataset (the data plane) stay service to service: UNIMPLEMENTED here."""

    service = collect_pb2.DESCRIPTOR.services_by_name["CollectService"].full_name
    peer = "collect"
    unary = ("GetDataset", "ListDatasets")
    stream = ()
    client_stream = ("UploadDataset",)


def _metadata(context: grpc.ServicerContext):
    """The caller's custom metadata (gRPC's own headers stay behind)."""
    return tuple((k, v) for k, v in context.invocation_metadata() if not k.startswith(("grpc-", ":")))
