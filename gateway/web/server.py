"""The gateway's HTTP server: uvicorn in a thread of the gateway process, with the
same bearer token and TLS as the gRPC port, a body limit, CORS when configured,
and every error as JSON {"error": message}."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import socket
import threading
from typing import Mapping

import grpc
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse

from cookline import config
from services.common.errors import status_of

log = logging.getLogger("cookline.http")

# gRPC status of a failed call -> HTTP status of the answer.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413, grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class HTTPFail(Exception):
    """Ends a request with `status` and {"error": message}; the message names the field."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _on_fail(_request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, HTTPFail):
        return error(exc.status, exc.message)
    if isinstance(exc, HTTPException):
        return error(exc.status_code, exc.detail)
    code, message = status_of(exc)  # a gRPC error of a peer, a store error, or a bug (500, logged)
    if code == grpc.StatusCode.INTERNAL:
        log.error("request failed", exc_info=exc)
    return error(HTTP_STATUS.get(code, 500), message)


class Guard:
    """ASGI middleware in front of every route: the bearer token on /api/ (401 JSON without it)
    and the body limit (413 JSON, from Content-Length before reading, or while reading)."""

    def __init__(self, app, token: str, max_body: int, public=lambda path: not path.startswith("/api/")):
        self.app, self.max_body, self.public = app, max_body, public
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.expected and scope["method"] != "OPTIONS" and not self.public(scope["path"]):
            if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
                response = error(401, "Authorization: missing or wrong bearer token")
                response.headers["WWW-Authenticate"] = "Bearer"
                return await response(scope, receive, send)
        length = headers.get(b"content-length", b"")
        if length and (not length.isdigit() or int(length) > self.max_body):
            response = error(413, f"body: {length.decode(errors='replace')} bytes, at most {self.max_body} "
                                  "(COOKLINE_MAX_MESSAGE_MB)")
            response.headers["Connection"] = "close"
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise HTTPFail(413, f"body: more than {self.max_body} bytes (COOKLINE_MAX_MESSAGE_MB)")
            return message
        return await self.app(scope, counted, send)


def build(routes, env: Mapping[str, str] | None = None) -> Starlette:
    """A Starlette app of `routes`, guarded and with JSON errors."""
    middleware = []
    origins = config.cors_origins(env)
    if origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"],
                                     allow_headers=["Authorization", "Content-Type"]))
    middleware.append(Middleware(Guard, token=config.auth_token(env), max_body=config.max_message_bytes(env)))
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={Exception: _on_fail, HTTPException: _on_fail, HTTPFail: _on_fail})


def start(app, service: str, env: Mapping[str, str] | None = None) -> str:
    """Serves `app` on the service's HTTP address in a daemon thread (TLS when COOKLINE_TLS_CERT/KEY
    are set); returns what it listens on, for the log. A port that cannot be bound is a SystemExit now."""
    env = os.environ if env is None else env
    host, port = config.http_bind_address(service, env)
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                    reuse_port=False)
    except OSError as exc:
        raise SystemExit(f"{service}: cannot listen for HTTP on {host}:{port}: {exc.strerror}") from None
    tls = config.tls_server_credentials(env) is not None  # validates the pair
    server = uvicorn.Server(uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1,
        ssl_certfile=env.get("COOKLINE_TLS_CERT") if tls else None,
        ssl_keyfile=env.get("COOKLINE_TLS_KEY") if tls else None))
    threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), name=f"{service}-http",
                     daemon=True).start()
    return f"{host}:{port}" + (" (TLS)" if tls else "")


def json_body_error(exc: json.JSONDecodeError) -> HTTPFail:
    return HTTPFail(400, f"body: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})")
