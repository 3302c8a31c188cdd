"""Plain HTTP calls to a service's HTTP port (http.client: nothing between the test and the
bytes on the wire), with the environment's token and TLS CA, for the REST tests."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Mapping

from cookline import config

# Seconds a call may take before the test fails: a server that never answers (a hung
# connection) fails the test instead of blocking it.
TIMEOUT_S = 60


def connection(env: Mapping[str, str], service: str) -> http.client.HTTPConnection:
    host, port = config.http_address(service, env).rsplit(":", 1)
    ca = config.tls_ca(env)
    if ca is not None:
        context = ssl.create_default_context(cadata=ca.decode())
        return http.client.HTTPSConnection(host, int(port), timeout=TIMEOUT_S, context=context)
    return http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)


def http_call(
    env: Mapping[str, str],
    service: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    declared_length: int | None = None,
    token: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one request. `declared_length`: send that
    Content-Length, then `body` (shorter, or none) and wait for the answer. `token`: send the
    environment's bearer token, if it has one."""
    headers = dict(headers or {})
    secret = config.auth_token(env)
    if token and secret:
        headers["authorization"] = f"Bearer {secret}"
    conn = connection(env, service)
    try:
        if declared_length is not None:
            conn.putrequest(method, path)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.putheader("content-length", str(declared_length))
            conn.endheaders(body or None)
        else:
            conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()
