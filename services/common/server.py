"""Server bootstrap shared by every service: health, reflection, message limits,
logging and graceful shutdown on SIGTERM/SIGINT."""
from __future__ import annotations

import hmac
import logging
import signal
import threading
from concurrent import futures
from typing import Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cookline import config

log = logging.getLogger("cookline.server")

# Seconds in-flight RPCs get to finish after SIGTERM before they are cancelled.
SHUTDOWN_GRACE_S = 5.0


def setup_logging(service: str) -> None:
    """One log format for every service; level from COOKLINE_LOG_LEVEL."""
    logging.basicConfig(
        level=config.log_level(),
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
    )


# Methods anyone may call without the token: probes (compose, k8s) and discovery.
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _deny(_request, context):
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (authorization metadata)")


class BearerAuth(grpc.ServerInterceptor):
    """Refuses calls whose `authorization` metadata is not `Bearer <token>` with UNAUTHENTICATED."""

    def __init__(self, token: str):
        self.expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, details):
        if details.method.startswith(PUBLIC_PREFIXES):
            return continuation(details)
        sent = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(sent.encode(), self.expected):
            return continuation(details)
        handler = continuation(details)
        if handler is None:
            return None  # unknown method: UNIMPLEMENTED as usual
        # answer in the call's own shape, so the client sees the status
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(_deny)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(_deny)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(_deny)
        return grpc.unary_unary_rpc_method_handler(_deny)


def serve(service: str, register: Callable[[grpc.Server], Iterable[str]], max_workers: int = 32,
          on_start: Callable[[health.HealthServicer], None] | None = None) -> None:
    """Runs `service` until SIGTERM/SIGINT.

    `register(server)` adds the servicers and returns their full service names
    (e.g. "cookline.v1.CollectService"); each is reported SERVING by the health
    service and listed by reflection. `on_start(health)`, when given, runs once
    the server answers, with the health servicer (serve reports each model's
    readiness under the model's name).
    """
    setup_logging(service)
    token = config.auth_token()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=config.grpc_options(),
                         interceptors=[BearerAuth(token)] if token else [],
                         maximum_concurrent_rpcs=config.max_concurrent_rpcs())
    names = list(register(server))

    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        names + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )

    bind = config.bind_address(service)
    if server.add_insecure_port(bind) == 0:
        raise SystemExit(f"{service}: cannot listen on {bind}")
    server.start()
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("%s listening on %s", service, bind)
    if on_start is not None:
        on_start(health_servicer)

    stopping = threading.Event()

    def on_signal(signum, _frame):
        log.info("%s: %s received, shutting down", service, signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopping.wait()
    health_servicer.enter_graceful_shutdown()  # peers see NOT_SERVING first
    server.stop(SHUTDOWN_GRACE_S).wait()
    log.info("%s stopped", service)
