"""The gateway's HTTP port on a stack with a bearer token, TLS and CORS origins: the pages are
public, /api/ needs the token (401 JSON without it), the port speaks only HTTPS, and only the
configured origins pass CORS."""

import http.client
import json
import socket

import pytest
from rest_client import connection, http_call

from helpers import make_certificates

TOKEN = "gateway-http-test-token"
ALLOWED = "https://app.example.com"


def STACK_ENV(tmp_path_factory):  # the stack fixture's hook
    return make_certificates(str(tmp_path_factory.mktemp("tls"))) | {
        "COOKLINE_AUTH_TOKEN": TOKEN,
        "COOKLINE_CORS_ORIGINS": f"{ALLOWED}, http://localhost:3000",
    }


def test_pages_are_public_and_the_api_needs_the_token(env):
    for path in ("/", "/static/app.js", "/static/style.css"):
        status, _, _ = http_call(env, "gateway", "GET", path, token=False)
        assert status == 200, path
    status, headers, body = http_call(env, "gateway", "GET", "/api/runs", token=False)
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert "bearer token" in json.loads(body)["error"]
    status, _, body = http_call(
        env, "gateway", "GET", "/api/runs", headers={"authorization": "Bearer wrong"}, token=False
    )
    assert status == 401
    status, _, body = http_call(env, "gateway", "GET", "/api/runs")
    assert status == 200 and json.loads(body) == {"runs": []}


def test_no_plaintext_http_when_tls_is_on(env):
    host, port = env["COOKLINE_GATEWAY_HTTP_ADDR"].rsplit(":", 1)
    plain = http.client.HTTPConnection(host, int(port), timeout=30)
    with pytest.raises((http.client.HTTPException, ConnectionError, socket.timeout)):
        plain.request("GET", "/api/runs", headers={"authorization": f"Bearer {TOKEN}"})
        plain.getresponse().read()
    plain.close()
    tls = connection(env, "gateway")  # verifies the certificate against COOKLINE_TLS_CA
    tls.request("GET", "/")
    assert tls.getresponse().status == 200
    tls.close()


def test_cors_lets_only_the_configured_origins_in(env):
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type",
    }
    status, headers, _ = http_call(
        env, "gateway", "OPTIONS", "/api/models/iris/predict", headers=preflight | {"origin": ALLOWED}, token=False
    )
    assert status == 200 and headers["access-control-allow-origin"] == ALLOWED
    assert "authorization" in headers["access-control-allow-headers"].lower()
    status, headers, _ = http_call(
        env,
        "gateway",
        "OPTIONS",
        "/api/models/iris/predict",
        headers=preflight | {"origin": "https://evil.example"},
        token=False,
    )
    assert status == 400 and "access-control-allow-origin" not in headers
    status, headers, _ = http_call(env, "gateway", "GET", "/api/runs", headers={"origin": ALLOWED})
    assert status == 200 and headers["access-control-allow-origin"] == ALLOWED
