"""Server bootstrap shared by every service: health, reflection, message limits,
logging, plugins (loaded at start, listed by PluginService) and graceful shutdown on
SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import ctypes
import hmac
import inspect
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures

import grpc
import uvloop
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cookline import config
from services.common import plugins

log = logging.getLogger("cookline.server")

# Seconds in-flight RPCs get to finish after SIGTERM before they are cancelled.
SHUTDOWN_GRACE_S = 5.0


# Most glibc malloc arenas a service uses (bound_malloc).
MALLOC_ARENAS = 2


def bound_malloc() -> None:
    """Makes freed large buffers go back to the OS at once (glibc malloc).

    Data-plane services allocate and free buffers of many MB per batch. glibc raises its
    mmap threshold after such frees, after which big buffers come from the heap and the
    freed space stays in the process: RSS creeps up with the data volume. A fixed 16 MiB
    threshold keeps the largest buffers (whole pulled batches, shards) mmap-allocated and
    returned on free, while batch-sized buffers are reused from the heap (a 1 MiB threshold
    halves the stream's throughput: every buffer then costs fresh zeroed pages).

    At most MALLOC_ARENAS arenas: glibc gives each thread that allocates an arena of its own (up to
    8 per core), and what a thread freed stays in its arena. A sync gRPC server reads concurrent
    streams on many threads, so a burst of oversized messages (refused, but read while their
    flow-control windows were open) left each burst's buffers behind in fresh arenas: RSS ratcheted
    up (+390 MB after 8 bursts of 8 streams of 80 MB messages); with 2 arenas it stays at the first
    burst's level (docs/configuration.md, COOKLINE_MAX_MESSAGE_MB).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    m_mmap_threshold, m_trim_threshold, m_arena_max = -3, -1, -8
    libc.mallopt(m_mmap_threshold, 16 << 20)
    libc.mallopt(m_trim_threshold, 4 << 20)
    libc.mallopt(m_arena_max, MALLOC_ARENAS)


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


async def _deny_async(_request, context):
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (authorization metadata)")


def _denying(handler, deny):
    """A handler of `handler`'s shape whose behaviour is `deny`, so the client sees the status;
    None for an unknown method (UNIMPLEMENTED as usual)."""
    if handler is None:
        return None
    make = _HANDLERS[(handler.request_streaming, handler.response_streaming)]
    return make(deny)


class BearerAuth(grpc.ServerInterceptor):
    """Refuses calls whose `authorization` metadata is not `Bearer <token>` with UNAUTHENTICATED."""

    def __init__(self, token: str):
        self.expected = f"Bearer {token}".encode()

    def allows(self, details) -> bool:
        if details.method.startswith(PUBLIC_PREFIXES):
            return True
        sent = dict(details.invocation_metadata or ()).get("authorization", "")
        return hmac.compare_digest(sent.encode(), self.expected)

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        return handler if self.allows(details) else _denying(handler, _deny)


class AsyncBearerAuth(grpc.aio.ServerInterceptor):
    """BearerAuth for asyncio servers."""

    def __init__(self, token: str):
        self.auth = BearerAuth(token)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        return handler if self.auth.allows(details) else _denying(handler, _deny_async)


class StreamTracker(grpc.ServerInterceptor):
    """Counts the response streams open on this server and logs the end of each one, with the
    wall-clock time it ended and how many are still open: how cancellation and deadlines are
    seen to stop a stream on every hop."""

    def __init__(self):
        self.open = 0
        self.lock = threading.Lock()

    def opened(self) -> float:
        with self.lock:
            self.open += 1
        return time.time()

    def closed(self, method: str, started: float, ran_to_end: bool) -> None:
        with self.lock:
            self.open -= 1
            still_open = self.open
        ended = time.time()
        log.info(
            "stream %s ended at %.3f after %.3f s (%s); %d streams open",
            method,
            ended,
            ended - started,
            "ran to its end" if ran_to_end else "call cancelled or expired",
            still_open,
        )

    @staticmethod
    def rewrap(handler, tracked):
        make = _HANDLERS[(handler.request_streaming, True)]
        return make(
            tracked, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None or not handler.response_streaming:
            return handler
        behavior = handler.unary_stream or handler.stream_stream

        def tracked(request, context):
            started = self.opened()
            try:
                yield from behavior(request, context)
            finally:
                self.closed(details.method, started, context.is_active())

        return self.rewrap(handler, tracked)


class AsyncStreamTracker(grpc.aio.ServerInterceptor):
    """StreamTracker for asyncio servers (handlers that are async generators)."""

    def __init__(self):
        self.tracker = StreamTracker()

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not handler.response_streaming:
            return handler
        behavior = handler.unary_stream or handler.stream_stream
        if not inspect.isasyncgenfunction(behavior):  # a coroutine writing with context.write (health Watch)
            return handler
        tracker = self.tracker

        async def tracked(request, context):
            started, ran_to_end = tracker.opened(), False
            try:
                async for response in behavior(request, context):
                    yield response
                ran_to_end = True
            finally:
                tracker.closed(details.method, started, ran_to_end)

        return tracker.rewrap(handler, tracked)


def _serialize(message) -> bytes:
    """A response message, or bytes already in its wire format (see cookline.tensors.encode_batch)."""
    return message if isinstance(message, bytes) else message.SerializeToString()


_HANDLERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_servicer(server: grpc.Server, service, servicer) -> str:
    """Registers `servicer` for the proto service descriptor `service`; returns its full name.

    Like the generated add_*Servicer_to_server, except that a method may also return (or
    stream) responses as pre-encoded bytes: the data plane's streams send TensorBatches
    written straight from numpy memory, and process forwards collect's bytes untouched.
    """
    handlers = {}
    for method in service.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        make = _HANDLERS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=request_class.FromString,
            response_serializer=_serialize,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    return service.full_name


class _ReflectionPool:
    """The default descriptor pool, answering method symbols too.

    protobuf 7's Python pool finds services, messages and fields by name but not methods:
    `FindFileContainingSymbol("cookline.v1.ServeService.Predict")` raises KeyError, so
    `grpcurl describe` and ghz (which resolve a call's method through reflection) failed with
    "Symbol not found". A method's file is its service's file.
    """

    def __init__(self, pool=None):
        self._pool = pool or descriptor_pool.Default()

    def __getattr__(self, name):
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str):  # the pool's own method name
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            try:
                return self._pool.FindMethodByName(symbol).containing_service.file
            except KeyError:
                pass
            raise


def _enable_reflection(server, names: list[str]) -> None:
    reflection.enable_server_reflection(
        names + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
        pool=_ReflectionPool(),
    )


def _listen(server, service: str) -> str:
    """Binds the service's address (TLS when configured); returns it for the log."""
    bind = config.bind_address(service)
    tls = config.tls_server_credentials()
    if tls is None:
        port = server.add_insecure_port(bind)
    else:
        port = server.add_secure_port(bind, grpc.ssl_server_credentials([tls]))
    if port == 0:
        raise SystemExit(f"{service}: cannot listen on {bind}")
    return bind + (" (TLS)" if tls else "")


def _exit_stopped(service: str) -> None:
    log.info("%s stopped", service)
    # Every RPC has ended: leave now rather than wait on interpreter teardown (worker pools,
    # library threads), which once held a stopped service alive past its SIGTERM budget.
    logging.shutdown()
    os._exit(0)


def serve(
    service: str,
    register: Callable[[grpc.Server], Iterable[str]],
    max_workers: int = 32,
    on_start: Callable[[health.HealthServicer], None] | None = None,
    http_app: Callable[[], object] | None = None,
    http_public: Iterable[str] = (),
) -> None:
    """Runs `service` until SIGTERM/SIGINT.

    `register(server)` adds the servicers and returns their full service names
    (e.g. "cookline.v1.CollectService"); each is reported SERVING by the health
    service and listed by reflection. `on_start(health)`, when given, runs once
    the server answers, with the health servicer (serve reports each model's
    readiness under the model's name). `http_app()`, when given, is called after
    `register` and returns an ASGI app served on the service's HTTP port from a thread
    of its own (services.common.http: same token, TLS and limits), stopped with the
    gRPC server. `http_public`: paths served without the token besides the probes (pages that
    hold no data).
    """
    setup_logging(service)
    bound_malloc()
    token = config.auth_token()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        options=config.grpc_options(),
        interceptors=([BearerAuth(token)] if token else []) + [StreamTracker()],
        maximum_concurrent_rpcs=config.max_concurrent_rpcs(),
    )
    plugins.spec_plugins.load()  # before the servicers: their checks know the plugins
    names = list(register(server))
    names.append(add_servicer(server, plugins.SERVICE, plugins.PluginServicer(service)))

    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _enable_reflection(server, names)

    describe = _listen(server, service)
    http_thread = None
    if http_app is not None:
        from services.common import http  # the HTTP stack is imported only by services that have a port for it

        http_thread = http.serve_http_thread(http_app(), service, public=(*http.PUBLIC_PATHS, *http_public))
        describe += f"; HTTP on {http_thread.describe}"
    server.start()
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("%s listening on %s", service, describe)
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
    stopped = server.stop(SHUTDOWN_GRACE_S)
    if http_thread is not None:
        http_thread.stop(SHUTDOWN_GRACE_S + 5)
    stopped.wait()
    _exit_stopped(service)


def serve_async(
    service: str,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    on_start: Callable[[health_async.HealthServicer], None] | None = None,
    http_app: Callable[[], object] | None = None,
    http_public: Iterable[str] = (),
) -> None:
    """`serve` on a grpc.aio server: the servicers' methods are coroutines (or async
    generators) run on one event loop, so a call costs no hand-off between threads.
    Same health, reflection, auth, limits, stream log and shutdown; `on_start(health)`
    runs on the loop once the server answers. `http_app()`, when given, is called after
    `register` and returns an ASGI app served on the same loop on the service's HTTP port
    (services.common.http: same token, TLS and limits), stopped with the gRPC server.

    The loop is uvloop's (libuv), which grpc.aio and uvicorn both run on: every gRPC call
    passes through the loop several times (grpc.aio's completion-queue poller wakes it
    through a socket), and asyncio's own loop spent more of a call's time there. Measured
    on a bare grpc.aio echo, one caller: 0.43 against 0.48 ms p50, 0.29 against 0.33 ms of
    server CPU per call."""
    setup_logging(service)
    bound_malloc()
    uvloop.run(_serve_async(service, register, on_start, http_app))


async def _serve_async(service, register, on_start, http_app=None) -> None:
    from services.common import http  # the HTTP stack is imported only by services that have a port for it

    token = config.auth_token()
    server = grpc.aio.server(
        options=config.grpc_options(),
        interceptors=([AsyncBearerAuth(token)] if token else []) + [AsyncStreamTracker()],
        maximum_concurrent_rpcs=config.max_concurrent_rpcs(),
    )
    plugins.spec_plugins.load()
    names = list(register(server))
    names.append(add_servicer(server, plugins.SERVICE, plugins.AsyncPluginServicer(service)))
    health_servicer = health_async.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _enable_reflection(server, names)
    describe = _listen(server, service)
    http_server = await http.serve_http(http_app(), service) if http_app is not None else None
    if http_server is not None:
        describe += f"; HTTP on {http_server.describe}"
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("%s listening on %s", service, describe)
    if on_start is not None:
        on_start(health_servicer)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        log.info("%s: %s received, shutting down", service, signal.Signals(signum).name)
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await stopping.wait()
    await health_servicer.enter_graceful_shutdown()  # peers see NOT_SERVING first
    if http_server is not None:
        await asyncio.gather(server.stop(SHUTDOWN_GRACE_S), http_server.stop())
    else:
        await server.stop(SHUTDOWN_GRACE_S)
    _exit_stopped(service)
