"""One error model for every RPC: precise gRPC status codes, messages naming the field.

Servicer methods raise `Fail` (or let store / peer errors propagate); the
`rpc` decorator turns them into `context.abort` with the right code. A broken
pipeline rule (cookline.spec's SpecError) is INVALID_ARGUMENT, here and nowhere else. A peer's
gRPC error keeps its code, so INVALID_ARGUMENT from collect reaches the gateway
as INVALID_ARGUMENT.
"""

from __future__ import annotations

import functools
import inspect
import logging

import grpc

from cookline.spec import SpecError
from services.common.store import (
    ChecksumError,
    NotFoundError,
    StoreDeniedError,
    StoreFullError,
    StoreUnavailableError,
)

log = logging.getLogger("cookline.errors")


class Fail(Exception):
    """Ends an RPC with `code` and `message`."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> Fail:
    """INVALID_ARGUMENT: the message names the bad field."""
    return Fail(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> Fail:
    """NOT_FOUND: a dataset, model or run that does not exist."""
    return Fail(grpc.StatusCode.NOT_FOUND, message)


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status an exception stands for."""
    if isinstance(exc, Fail):
        return exc.code, exc.message
    if isinstance(exc, SpecError):  # INVALID_ARGUMENT; PERMISSION_DENIED / NOT_FOUND for a local source
        return grpc.StatusCode[exc.status], exc.message
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return exc.code(), exc.details() or exc.code().name
    if isinstance(exc, NotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, ChecksumError):
        return grpc.StatusCode.DATA_LOSS, str(exc)
    if isinstance(exc, StoreFullError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"object store full: {exc}"
    if isinstance(exc, StoreDeniedError):
        return grpc.StatusCode.PERMISSION_DENIED, f"object store denied the call: {exc}"
    if isinstance(exc, StoreUnavailableError):
        return grpc.StatusCode.UNAVAILABLE, f"object store unavailable: {exc}"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def _status_logged(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    code, message = status_of(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("%s failed", method)
    else:
        log.info("%s -> %s: %s", method, code.name, message)
    return code, message


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str):
    context.abort(*_status_logged(exc, method))


def rpc(method):
    """Decorates a servicer method (unary or streaming, sync or asyncio) with the error model."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def async_stream(self, request, context):
            try:
                async for response in method(self, request, context):
                    yield response
            except Exception as exc:  # a cancelled call raises CancelledError, not this
                await context.abort(*_status_logged(exc, method.__qualname__))

        return async_stream

    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def async_unary(self, request, context):
            try:
                return await method(self, request, context)
            except Exception as exc:
                await context.abort(*_status_logged(exc, method.__qualname__))

        return async_unary

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(self, request, context):
            try:
                yield from method(self, request, context)
            except Exception as exc:  # every error becomes a status
                if context.is_active():
                    _abort(context, exc, method.__qualname__)

        return stream

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:
            _abort(context, exc, method.__qualname__)

    return unary


def remaining(context: grpc.ServicerContext) -> float | None:
    """Seconds left of the caller's deadline, for passing it on to the next hop; None if it has none."""
    left = context.time_remaining()
    return left if left is not None and left < 10**9 else None  # grpc reports "no deadline" as ~9e18 s
