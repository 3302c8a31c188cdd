"""HTTP front door shared by the services that have one (serve's OIP v2 REST, the gateway's
dashboard): an ASGI app (Starlette or FastAPI) served by uvicorn, behind the same bearer
token, TLS files and message-size limit as the service's gRPC port, answering every error as
JSON `{"error": "<message naming the field>"}` (the Open Inference Protocol's REST error form).

    app = Starlette(routes=..., exception_handlers=http.exception_handlers())
    server = await http.serve_http(app, "serve")          # on the service's asyncio loop
    ...
    await server.stop()

    server = http.serve_http_thread(app, "gateway")      # a sync service: its own thread and loop
    ...
    server.stop()

services.common.server.serve / serve_async take `http_app=lambda: app` and do this for a service.

Settings: COOKLINE_<SERVICE>_HTTP_ADDR (port; host from COOKLINE_BIND_HOST), COOKLINE_AUTH_TOKEN
(every path but the public ones needs `Authorization: Bearer <token>`), COOKLINE_TLS_CERT/KEY
(HTTPS only, no plaintext), COOKLINE_MAX_MESSAGE_MB (largest request body).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import grpc
import orjson
import uvicorn
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from cookline import config
from services.common.errors import Fail, status_of
from services.common.store import NotFoundError, StoreUnavailableError

log = logging.getLogger("cookline.http")

# HTTP status of each gRPC status, so one domain error reads the same on both transports.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# Paths anyone may call without the token: liveness/readiness probes (compose, k8s).
PUBLIC_PATHS = ("/v2/health/live", "/v2/health/ready", "/healthz")

# Seconds a client gets to send the rest of a request body it announced; then 408 and the
# connection is closed (a client that stops mid-body never holds a connection open).
BODY_TIMEOUT_S = 30.0


class HTTPFail(Exception):
    """Ends an HTTP request with `status` and a JSON error whose message names the field."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """`{"error": message}` with `status`."""
    return Response(
        orjson.dumps({"error": message}), status_code=status, headers=headers, media_type="application/json"
    )


def http_status_of(exc: BaseException) -> tuple[int, str]:
    """HTTP status and message an exception stands for: HTTPFail, Starlette's HTTPException,
    or any domain error through services.common.errors.status_of (Fail, NotFoundError, ...)."""
    if isinstance(exc, HTTPFail):
        return exc.status, exc.message
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    code, message = status_of(exc)
    return HTTP_STATUS.get(code, 500), message


async def _on_error(request: Request, exc: Exception) -> Response:
    status, message = http_status_of(exc)
    if isinstance(exc, HTTPException):  # routing's 404 / 405: say which request
        message = f"{request.method} {request.url.path}: {message}"
    if status >= 500 and status not in (501, 503, 504):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    else:
        log.info("%s %s -> %d: %s", request.method, request.url.path, status, message)
    return error_response(status, message, getattr(exc, "headers", None))


def exception_handlers() -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    """Starlette/FastAPI exception_handlers: every error (404 route, 405 method, HTTPFail, the
    domain's errors, anything else as 500) answered as JSON `{"error": ...}`.

    The expected errors are listed by class: Starlette answers those in its exception middleware
    and the connection stays usable; a handler for Exception runs in its outermost middleware,
    which re-raises after answering (logged by uvicorn as a crash), so only the unexpected reach it."""
    expected = (HTTPException, HTTPFail, Fail, NotFoundError, StoreUnavailableError, grpc.RpcError)
    return {**{cls: _on_error for cls in expected}, Exception: _on_error}


def json_body(body: bytes, what: str = "body") -> Any:
    """Parses a JSON request body; 400 naming where it is malformed."""
    if not body:
        raise HTTPFail(400, f"{what}: empty, expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPFail(400, f"{what}: malformed JSON: {exc}") from None


def require_content_type(request: Request, *accepted: str) -> str:
    """The request's media type when it is one of `accepted` (or absent: taken as the first);
    415 naming the header otherwise."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not media:
        return accepted[0]
    if media not in accepted:
        raise HTTPFail(415, f"content-type: {media!r} is not accepted (send {' or '.join(accepted)})")
    return media


async def _send_error(send, status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware in front of the app: the bearer token, and the body-size limit (a declared
    Content-Length over it is refused before the body is read; a chunked body is counted as it
    arrives), and the body timeout."""

    def __init__(
        self,
        app,
        token: str,
        max_body: int,
        public: Iterable[str] = PUBLIC_PATHS,
        body_timeout_s: float = BODY_TIMEOUT_S,
    ):
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.max_body = max_body
        self.public = tuple(public)
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])  # names arrive lower-cased
        # A CORS preflight (OPTIONS with Access-Control-Request-Method) never carries the token:
        # it passes to the app, whose CORS middleware answers it (or whose router refuses it).
        preflight = scope["method"] == "OPTIONS" and b"access-control-request-method" in headers
        if self.expected is not None and scope["path"] not in self.public and not preflight:
            if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
                return await _send_error(
                    send, 401, "authorization: missing or wrong bearer token", [(b"www-authenticate", b"Bearer")]
                )
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _send_error(send, 400, f"content-length: {length.decode('latin-1')!r} is not a number")
            if int(length) > self.max_body:
                return await _send_error(
                    send,
                    413,
                    f"body: {int(length)} bytes is over the limit of {self.max_body} (COOKLINE_MAX_MESSAGE_MB)",
                    [(b"connection", b"close")],
                )
        await self.app(scope, self._limited(receive), send)

    def _limited(self, receive):
        seen = 0
        limit, timeout = self.max_body, self.body_timeout_s

        async def limited_receive():
            nonlocal seen
            try:
                async with asyncio.timeout(timeout):
                    message = await receive()
            except TimeoutError:
                raise HTTPFail(408, f"body: not received within {timeout:g} s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPFail(413, f"body: over the limit of {limit} bytes (COOKLINE_MAX_MESSAGE_MB)")
            return message

        return limited_receive


class _Server(uvicorn.Server):
    """uvicorn.Server that leaves signals to the service (it stops the server itself)."""

    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self.up = asyncio.Event()

    def capture_signals(self):
        return contextlib.nullcontext()

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        self.up.set()


class HTTPServer:
    """A running HTTP server; `describe` is the address it listens on, for the log."""

    def __init__(self, server: _Server, task: asyncio.Task, describe: str, port: int):
        self._server = server
        self._task = task
        self.describe = describe
        self.port = port

    async def stop(self) -> None:
        """Stops accepting, lets in-flight requests finish, closes the connections."""
        self._server.should_exit = True
        await self._task


def _bind(service: str, env: Mapping[str, str] | None) -> socket.socket:
    host, port = config.http_bind_address(service, env)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only when the socket
    # says TCP; otherwise a response's header and body writes wait on delayed ACKs (~40 ms each).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"{service}: cannot listen for HTTP on {host}:{port} (COOKLINE_{service.upper()}_HTTP_ADDR): {exc.strerror}"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _uvicorn_config(
    app, service: str, env: Mapping[str, str] | None, public: Iterable[str]
) -> tuple[uvicorn.Config, bool]:
    tls = config.tls_server_files(env)
    guarded = Guard(app, config.auth_token(env), config.max_message_bytes(env), public)
    uv_config = uvicorn.Config(
        guarded,
        loop="none",  # the running loop: the service's own
        http="httptools",
        lifespan="auto",
        log_config=None,  # the service's logging
        access_log=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=5,
        ssl_keyfile=tls[0] if tls else None,
        ssl_certfile=tls[1] if tls else None,
    )
    return uv_config, tls is not None


async def serve_http(
    app, service: str, env: Mapping[str, str] | None = None, public: Iterable[str] = PUBLIC_PATHS
) -> HTTPServer:
    """Starts serving `app` on the running loop (the service's own: requests share its state, e.g.
    serve's batchers); returns once it accepts connections."""
    sock = _bind(service, env)
    uv_config, tls = _uvicorn_config(app, service, env, public)
    server = _Server(uv_config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name=f"{service}-http")
    up = asyncio.ensure_future(server.up.wait())
    await asyncio.wait([task, up], return_when=asyncio.FIRST_COMPLETED)
    if not server.up.is_set():
        up.cancel()
        task.result()  # its exception, if it raised one
        raise SystemExit(f"{service}: the HTTP server did not start")
    host, port = sock.getsockname()[:2]
    describe = f"http{'s' if tls else ''}://{host}:{port}"
    log.info("%s HTTP listening on %s", service, describe)
    return HTTPServer(server, task, describe, port)


class HTTPThread:
    """An HTTP server running on its own thread and event loop (for services whose gRPC server is
    thread-based)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread, server: HTTPServer):
        self._loop = loop
        self._thread = thread
        self.server = server
        self.describe = server.describe
        self.port = server.port

    def stop(self, timeout: float = 10.0) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)


def serve_http_thread(
    app, service: str, env: Mapping[str, str] | None = None, public: Iterable[str] = PUBLIC_PATHS
) -> HTTPThread:
    """serve_http on a new daemon thread with its own loop; returns once it accepts connections
    (a bind error raises SystemExit here, in the caller's thread)."""
    loop = asyncio.new_event_loop()
    holder: dict[str, Any] = {}
    started = threading.Event()

    def run():
        asyncio.set_event_loop(loop)

        async def start():
            try:
                holder["server"] = await serve_http(app, service, env, public)
            except BaseException as exc:  # handed to the caller's thread
                holder["error"] = exc
            finally:
                started.set()

        loop.run_until_complete(start())
        if "server" in holder:
            loop.run_forever()
        loop.close()

    thread = threading.Thread(target=run, name=f"{service}-http", daemon=True)
    thread.start()
    started.wait()
    if "error" in holder:
        raise holder["error"]
    return HTTPThread(loop, thread, holder["server"])
