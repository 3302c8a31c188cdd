"""gRPC channels to cookline services, all made the same way."""

from __future__ import annotations

import time
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cookline import config


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call of a channel."""

    def __init__(self, token: str):
        self.header = ("authorization", f"Bearer {token}")

    def _with_token(self, details):
        metadata = list(details.metadata or []) + [self.header]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._with_token(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._with_token(details), request_iterator)


class _Details(grpc.ClientCallDetails):
    """ClientCallDetails with other metadata (grpc's own type cannot be copied)."""

    def __init__(self, details, metadata):
        self.method, self.timeout, self.credentials = details.method, details.timeout, details.credentials
        self.wait_for_ready, self.compression = details.wait_for_ready, details.compression
        self.metadata = metadata


def raw_channel(target: str, env: Mapping[str, str] | None = None, options=None) -> grpc.Channel:
    """A channel to `target`: TLS, verifying the server against COOKLINE_TLS_CA, when that is
    set; plaintext otherwise."""
    ca = config.tls_ca(env)
    options = config.client_options(env) if options is None else options
    if ca is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca), options=options)


def channel(
    service: str, env: Mapping[str, str] | None = None, target: str | None = None, options=None
) -> grpc.Channel:
    """A channel to `service` at its configured address (or `target`), over TLS when
    COOKLINE_TLS_CA is set, carrying the bearer token when COOKLINE_AUTH_TOKEN is set.
    `options`: gRPC channel options (default: config.client_options)."""
    raw = raw_channel(target or config.address(service, env), env, options)
    token = config.auth_token(env)
    return grpc.intercept_channel(raw, _BearerToken(token)) if token else raw


def wait_healthy(target: str, timeout: float = 60.0, service: str = "", env: Mapping[str, str] | None = None) -> None:
    """Blocks until the gRPC health service at `target` answers SERVING (over TLS when the
    environment's COOKLINE_TLS_CA is set).

    Raises TimeoutError naming the target when it does not within `timeout` s.
    """
    deadline = time.monotonic() + timeout
    with raw_channel(target, env, options=[]) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{target} did not report SERVING within {timeout:.0f} s")
            try:
                # wait_for_ready: the call itself waits for the connection. (channel_ready_future
                # would leave grpc's connectivity-polling thread running into the channel's close.)
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=min(remaining, 5), wait_for_ready=True
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))  # poll interval between health checks
