"""services/common/http.py, the HTTP bootstrap of the services' HTTP ports, in process: a real
uvicorn server on a free port (its own thread), called with http.client."""

import json
from http.client import HTTPConnection

import pytest
from rest_client import http_call
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cookline import config
from helpers import free_ports
from services.common import http
from services.common.errors import invalid, not_found

TOKEN = "http-test-token"


async def echo(request: Request):
    return JSONResponse({"got": http.json_body(await request.body())})


async def fails(request: Request):
    kind = request.path_params["kind"]
    if kind == "invalid":
        raise invalid("inputs['x']: bad")
    if kind == "missing":
        raise not_found("model 'nope' not found")
    raise http.HTTPFail(415, "content-type: 'text/plain' is not accepted")


async def live(request: Request):
    return JSONResponse({"live": True})


@pytest.fixture(scope="module")
def env():
    (port,) = free_ports(1)
    env = {
        "COOKLINE_SERVE_HTTP_ADDR": f"127.0.0.1:{port}",
        "COOKLINE_AUTH_TOKEN": TOKEN,
        "COOKLINE_MAX_MESSAGE_MB": "1",
    }
    app = Starlette(
        routes=[Route("/echo", echo, methods=["POST"]), Route("/fail/{kind}", fails), Route("/v2/health/live", live)],
        exception_handlers=http.exception_handlers(),
    )
    server = http.serve_http_thread(app, "serve", env)
    assert server.describe == f"http://127.0.0.1:{port}"
    yield env
    server.stop()


def call(env, method, path, body=b"", **kw):
    status, headers, raw = http_call(env, "serve", method, path, body, **kw)
    return status, headers, json.loads(raw)


def test_json_in_and_out_with_the_token(env):
    status, headers, body = call(env, "POST", "/echo", b'{"a": [1, 2]}')
    assert status == 200 and body == {"got": {"a": [1, 2]}} and headers["content-type"] == "application/json"


def test_the_token_is_required_except_on_probes(env):
    status, headers, body = call(env, "POST", "/echo", b"{}", token=False)
    assert status == 401 and body == {"error": "authorization: missing or wrong bearer token"}
    assert headers["www-authenticate"] == "Bearer"
    assert call(env, "POST", "/echo", b"{}", headers={"Authorization": "Bearer no"}, token=False)[0] == 401
    assert call(env, "GET", "/v2/health/live", token=False)[:3:2] == (200, {"live": True})


@pytest.mark.parametrize(
    "kind, status, message",
    [
        ("invalid", 400, "inputs['x']: bad"),
        ("missing", 404, "model 'nope' not found"),
        ("http", 415, "content-type: 'text/plain' is not accepted"),
    ],
)
def test_domain_errors_map_to_http_statuses_as_json(env, kind, status, message):
    assert call(env, "GET", f"/fail/{kind}")[::2] == (status, {"error": message})


def test_routing_errors_and_malformed_json_are_json_naming_the_request(env):
    assert call(env, "GET", "/nowhere")[::2] == (404, {"error": "GET /nowhere: Not Found"})
    status, headers, body = call(env, "GET", "/echo")
    assert status == 405 and body == {"error": "GET /echo: Method Not Allowed"} and headers["allow"] == "POST"
    status, _, body = call(env, "POST", "/echo", b'{"a": ')
    assert status == 400 and body["error"].startswith("body: malformed JSON")
    assert call(env, "POST", "/echo", b"")[::2] == (400, {"error": "body: empty, expected a JSON object"})


def test_bodies_over_the_limit_are_refused_declared_or_chunked(env):
    limit = config.max_message_bytes(env)
    status, headers, body = call(env, "POST", "/echo", declared_length=limit + 1)
    assert (
        status == 413
        and body["error"] == f"body: {limit + 1} bytes is over the limit of {limit} (COOKLINE_MAX_MESSAGE_MB)"
    )
    # chunked: no Content-Length, counted as it arrives
    host, port = config.http_address("serve", env).rsplit(":", 1)
    conn = HTTPConnection(host, int(port), timeout=60)
    chunks = (b"x" * 65536 for _ in range(limit // 65536 + 1))  # one chunk over
    conn.request("POST", "/echo", body=chunks, headers={"Authorization": f"Bearer {TOKEN}"}, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"] == f"body: over the limit of {limit} bytes (COOKLINE_MAX_MESSAGE_MB)"
    conn.close()


def test_a_taken_port_is_a_clear_start_up_error(env):
    with pytest.raises(SystemExit, match="cannot listen for HTTP on 127.0.0.1:.* \\(COOKLINE_SERVE_HTTP_ADDR\\)"):
        http.serve_http_thread(Starlette(), "serve", env)


def test_http_addresses_come_from_the_settings():
    assert config.http_address("serve", {}) == "localhost:8000"
    assert config.http_address("gateway", {}) == "localhost:8080"
    assert config.http_bind_address(
        "serve", {"COOKLINE_SERVE_HTTP_ADDR": "serve:9000", "COOKLINE_BIND_HOST": "0.0.0.0"}
    ) == ("0.0.0.0", 9000)
    with pytest.raises(ValueError, match="COOKLINE_SERVE_HTTP_ADDR must be host:port"):
        config.http_bind_address("serve", {"COOKLINE_SERVE_HTTP_ADDR": "serve"})
