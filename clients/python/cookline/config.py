"""Configuration from environment variables: the one place they are read.

Every variable, with its default, is declared once in cookline.settings, from which
docs/configuration.md's table is generated. Defaults let the whole stack run on one machine
with no setup.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from cookline.settings import DEFAULT_HTTP_PORTS, DEFAULT_PORTS, default

SERVICES = tuple(DEFAULT_PORTS)


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def address(service: str, env: Mapping[str, str] | None = None) -> str:
    """host:port where `service` is reached (COOKLINE_<SERVICE>_ADDR)."""
    return _env(env).get(f"COOKLINE_{service.upper()}_ADDR") or f"localhost:{DEFAULT_PORTS[service]}"


def bind_address(service: str, env: Mapping[str, str] | None = None) -> str:
    """host:port a service listens on: COOKLINE_BIND_HOST and the port of its address."""
    host = _env(env).get("COOKLINE_BIND_HOST") or default("COOKLINE_BIND_HOST")
    port = address(service, env).rsplit(":", 1)[-1]
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def http_address(service: str, env: Mapping[str, str] | None = None) -> str:
    """host:port where `service`'s HTTP endpoints are reached (COOKLINE_<SERVICE>_HTTP_ADDR)."""
    return _env(env).get(f"COOKLINE_{service.upper()}_HTTP_ADDR") or f"localhost:{DEFAULT_HTTP_PORTS[service]}"


def http_bind_address(service: str, env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """(host, port) a service's HTTP server listens on: COOKLINE_BIND_HOST and the port of its HTTP address."""
    name = f"COOKLINE_{service.upper()}_HTTP_ADDR"
    port = http_address(service, env).rsplit(":", 1)[-1]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{name} must be host:port, got {http_address(service, env)!r}")
    return (_env(env).get("COOKLINE_BIND_HOST") or default("COOKLINE_BIND_HOST")).strip("[]"), int(port)


def predict_relay_bind_address(env: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """(host, port) the gateway's prediction relay listens on: COOKLINE_BIND_HOST and the port of
    COOKLINE_GATEWAY_PREDICT_ADDR; None when that is unset (no relay)."""
    value = (_env(env).get("COOKLINE_GATEWAY_PREDICT_ADDR") or "").strip()
    if not value:
        return None
    port = value.rsplit(":", 1)[-1]
    if ":" not in value or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"COOKLINE_GATEWAY_PREDICT_ADDR must be host:port, got {value!r}")
    return (_env(env).get("COOKLINE_BIND_HOST") or default("COOKLINE_BIND_HOST")).strip("[]"), int(port)


def cors_origins(env: Mapping[str, str] | None = None) -> list[str]:
    """COOKLINE_CORS_ORIGINS: comma-separated origins (scheme://host[:port], or *) whose web pages
    may call the HTTP endpoints from a browser. Empty (the default): no cross-origin calls."""
    origins = [o.strip().rstrip("/") for o in (_env(env).get("COOKLINE_CORS_ORIGINS") or "").split(",") if o.strip()]
    for origin in origins:
        if origin != "*" and "://" not in origin:
            raise ValueError(f"COOKLINE_CORS_ORIGINS: {origin!r} is not an origin (scheme://host[:port] or *)")
    return origins


def serve_metrics_address(env: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """COOKLINE_SERVE_METRICS_ADDR: host:port of serve's Prometheus text endpoint; unset means off."""
    value = (_env(env).get("COOKLINE_SERVE_METRICS_ADDR") or "").strip()
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"COOKLINE_SERVE_METRICS_ADDR must be host:port, got {value!r}")
    return host or "127.0.0.1", int(port)


def source_roots(env: Mapping[str, str] | None = None) -> list[str]:
    """COOKLINE_SOURCE_ROOTS: the folders local pipeline sources may be read from, separated by
    os.pathsep (':'), each made absolute with symlinks resolved. Unset: the working directory
    (the folder `cookline up` runs in)."""
    value = _env(env).get("COOKLINE_SOURCE_ROOTS") or ""
    roots = [r for r in value.split(os.pathsep) if r.strip()] or [os.getcwd()]
    return [os.path.realpath(os.path.abspath(r.strip())) for r in roots]


def max_message_bytes(env: Mapping[str, str] | None = None) -> int:
    """Largest gRPC message sent or received, servers and clients alike (COOKLINE_MAX_MESSAGE_MB)."""
    megabytes = int(_env(env).get("COOKLINE_MAX_MESSAGE_MB") or default("COOKLINE_MAX_MESSAGE_MB"))
    if not 1 <= megabytes <= 2047:
        raise ValueError("COOKLINE_MAX_MESSAGE_MB must be between 1 and 2047")
    return megabytes * 1024 * 1024


def grpc_options(env: Mapping[str, str] | None = None) -> list[tuple[str, object]]:
    """Channel/server options shared by every server and client."""
    limit = max_message_bytes(env)
    keepalive_ms = int(keepalive_seconds(env) * 1000)
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        # Keep long, quiet streams (an epoch with no batch for a while) alive: ping the peer
        # after keepalive_ms of silence ...
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        # ... and, as a server, accept those pings: by default a server allows one ping per
        # 5 minutes without data and answers more with GOAWAY "too_many_pings", cutting the
        # connection and its idle streams.
        ("grpc.http2.min_ping_interval_without_data_ms", keepalive_ms // 2),
    ]


def keepalive_seconds(env: Mapping[str, str] | None = None) -> float:
    """Silence on a connection after which it is pinged (COOKLINE_KEEPALIVE_S, default 30); servers
    accept pings twice as often. The same value on every service and client."""
    seconds = float(_env(env).get("COOKLINE_KEEPALIVE_S") or default("COOKLINE_KEEPALIVE_S"))
    if not 1 <= seconds <= 3600:
        raise ValueError("COOKLINE_KEEPALIVE_S must be between 1 and 3600")
    return seconds


# The service config of every channel (docs/scaling.md "Replicas and retries"; the Node.js and
# Go clients use the same). Transparent retries of calls that never reached the peer (peer starting or
# restarting): safe for every RPC because no response was received. round_robin: a
# target naming several replicas (a headless Service, dns:///process:50052) spreads
# calls over every ready one; one address behaves as before.
_RETRY_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "3s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


def client_options(env: Mapping[str, str] | None = None) -> list[tuple[str, object]]:
    """Options for channels to cookline services: grpc_options plus retries."""
    return grpc_options(env) + [("grpc.enable_retries", 1), ("grpc.service_config", _RETRY_SERVICE_CONFIG)]


# Receive window of one data-plane stream, in bytes: how far a producer may run ahead of the
# consumer pulling from it. Fixed, so a puller's memory is bounded whatever the load.
STREAM_WINDOW_BYTES = 8 << 20


def data_plane_options(env: Mapping[str, str] | None = None) -> list[tuple[str, object]]:
    """client_options for a channel that pulls data-plane streams (process from collect, train from
    process): a fixed receive window of STREAM_WINDOW_BYTES per stream instead of gRPC's own, which
    grows with its bandwidth-delay estimate. On a loaded machine the estimate's pings come back late
    (seconds), the estimate and the window grow to tens of MB, and as much data then queues in the
    puller whenever it is slower than its producer: its memory grew with the load, not the data."""
    return client_options(env) + [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES)]


def shard_bytes(env: Mapping[str, str] | None = None) -> int:
    """Target size of one dataset shard in bytes of uncompressed rows (COOKLINE_SHARD_MB, default 32).

    Collect maps the shard it streams and the next one: two shards of a stream are in memory.
    """
    megabytes = float(_env(env).get("COOKLINE_SHARD_MB") or default("COOKLINE_SHARD_MB"))
    if not 0 < megabytes <= 4096:
        raise ValueError("COOKLINE_SHARD_MB must be in (0, 4096]")
    return int(megabytes * 1024 * 1024)


def upload_spool_bytes(env: Mapping[str, str] | None = None) -> int:
    """Most bytes collect spools for the uploads in flight at once (COOKLINE_UPLOAD_SPOOL_MB, default 20480)."""
    return _positive_int(env, "COOKLINE_UPLOAD_SPOOL_MB", default("COOKLINE_UPLOAD_SPOOL_MB")) << 20


def serve_reconcile_seconds(env: Mapping[str, str] | None = None) -> float:
    """COOKLINE_SERVE_RECONCILE_S: seconds between a serve replica's reads of the deployed records; 0: off."""
    seconds = float(_env(env).get("COOKLINE_SERVE_RECONCILE_S") or default("COOKLINE_SERVE_RECONCILE_S"))
    if seconds < 0:
        raise ValueError("COOKLINE_SERVE_RECONCILE_S must be 0 or more")
    return seconds


def log_level(env: Mapping[str, str] | None = None) -> str:
    """COOKLINE_LOG_LEVEL: DEBUG, INFO (default), WARNING or ERROR."""
    return (_env(env).get("COOKLINE_LOG_LEVEL") or default("COOKLINE_LOG_LEVEL")).upper()


def store_wait_seconds(env: Mapping[str, str] | None = None) -> float:
    """How long a starting service keeps trying to reach the object store (COOKLINE_STORE_WAIT_S, default 60)."""
    seconds = float(_env(env).get("COOKLINE_STORE_WAIT_S") or default("COOKLINE_STORE_WAIT_S"))
    if seconds < 0:
        raise ValueError("COOKLINE_STORE_WAIT_S must be 0 or more")
    return seconds


def store_retry_seconds(env: Mapping[str, str] | None = None) -> float:
    """How long one object-store call keeps retrying transient errors (a store restarting, a
    dropped connection) with exponential back-off before it fails UNAVAILABLE
    (COOKLINE_STORE_RETRY_S, default 30)."""
    seconds = float(_env(env).get("COOKLINE_STORE_RETRY_S") or default("COOKLINE_STORE_RETRY_S"))
    if seconds < 0:
        raise ValueError("COOKLINE_STORE_RETRY_S must be 0 or more")
    return seconds


def abandoned_version_seconds(env: Mapping[str, str] | None = None) -> float:
    """COOKLINE_ABANDONED_VERSION_S: idle seconds after which an unpublished model version is
    abandoned (its files swept); 0 turns train's start-up sweep off. Default 3600."""
    seconds = float(_env(env).get("COOKLINE_ABANDONED_VERSION_S") or default("COOKLINE_ABANDONED_VERSION_S"))
    if seconds < 0:
        raise ValueError("COOKLINE_ABANDONED_VERSION_S must be 0 or more")
    return seconds


def auth_token(env: Mapping[str, str] | None = None) -> str:
    """Bearer token every call carries and every service demands (COOKLINE_AUTH_TOKEN, or the
    file named by COOKLINE_AUTH_TOKEN_FILE). Empty: no authentication."""
    env = _env(env)
    if env.get("COOKLINE_AUTH_TOKEN"):
        return env["COOKLINE_AUTH_TOKEN"]
    token = _read_file(env, "COOKLINE_AUTH_TOKEN_FILE")  # a bad path: ValueError naming the variable
    return token.decode("utf-8").strip() if token is not None else ""


def max_concurrent_rpcs(env: Mapping[str, str] | None = None) -> int:
    """Most RPCs one server runs at once (COOKLINE_MAX_CONCURRENT_RPCS, default 1000); calls
    beyond it get RESOURCE_EXHAUSTED at once instead of queueing without bound."""
    value = int(_env(env).get("COOKLINE_MAX_CONCURRENT_RPCS") or default("COOKLINE_MAX_CONCURRENT_RPCS"))
    if value < 1:
        raise ValueError("COOKLINE_MAX_CONCURRENT_RPCS must be at least 1")
    return value


# Serve's image input limits: the largest encoded file (bytes) and decoded size (pixels).
DEFAULT_SERVE_MAX_IMAGE_BYTES = default("COOKLINE_SERVE_MAX_IMAGE_BYTES")
DEFAULT_SERVE_MAX_IMAGE_PIXELS = default("COOKLINE_SERVE_MAX_IMAGE_PIXELS")


def _positive_int(env: Mapping[str, str] | None, name: str, default: int) -> int:
    raw = _env(env).get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1")
    return value


def serve_max_image_bytes(env: Mapping[str, str] | None = None) -> int:
    """Largest encoded image serve accepts in an image input (COOKLINE_SERVE_MAX_IMAGE_BYTES, 8 MiB)."""
    return _positive_int(env, "COOKLINE_SERVE_MAX_IMAGE_BYTES", DEFAULT_SERVE_MAX_IMAGE_BYTES)


def serve_max_image_pixels(env: Mapping[str, str] | None = None) -> int:
    """Largest image serve decodes, width x height (COOKLINE_SERVE_MAX_IMAGE_PIXELS, 40 million)."""
    return _positive_int(env, "COOKLINE_SERVE_MAX_IMAGE_PIXELS", DEFAULT_SERVE_MAX_IMAGE_PIXELS)


def _read_file(env: Mapping[str, str], name: str) -> bytes | None:
    path = (env.get(name) or "").strip()
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {path!r}: {exc.strerror}") from None


def tls_server_credentials(env: Mapping[str, str] | None = None) -> tuple[bytes, bytes] | None:
    """(private key, certificate chain) PEM a server listens with, from the files COOKLINE_TLS_KEY
    and COOKLINE_TLS_CERT; None (plaintext) when neither is set."""
    env = _env(env)
    key, cert = _read_file(env, "COOKLINE_TLS_KEY"), _read_file(env, "COOKLINE_TLS_CERT")
    if (key is None) != (cert is None):
        raise ValueError("COOKLINE_TLS_CERT and COOKLINE_TLS_KEY must be set together")
    return (key, cert) if key is not None and cert is not None else None


def tls_server_files(env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(key file, certificate file) paths of COOKLINE_TLS_KEY and COOKLINE_TLS_CERT, checked readable
    and set together (as tls_server_credentials); None (plaintext) when neither is set. For servers
    that load the files themselves (the HTTP front door)."""
    env = _env(env)
    if tls_server_credentials(env) is None:
        return None
    return env["COOKLINE_TLS_KEY"].strip(), env["COOKLINE_TLS_CERT"].strip()


def tls_ca(env: Mapping[str, str] | None = None) -> bytes | None:
    """PEM of the CA that clients (and services calling each other) verify servers against
    (COOKLINE_TLS_CA); None: plaintext channels."""
    return _read_file(_env(env), "COOKLINE_TLS_CA")
