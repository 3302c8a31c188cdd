"""Every setting (environment variable), declared once: its name, default and meaning.

cookline.config and the services read their defaults from here, and docs/configuration.md's
table is generated from this list (`make docs`; tests/unit/test_reference_docs.py fails when
the table is stale, or when the code reads a variable not declared here).

A setting with a `scope` is not read by cookline's Python code: "compose" ones are read by
deploy/compose.yaml, "make" ones by the Makefile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Default port of each service; COOKLINE_<SERVICE>_ADDR overrides host:port.
DEFAULT_PORTS = {"gateway": 50050, "collect": 50051, "process": 50052, "train": 50053, "serve": 50054}
# Default HTTP port of the services with an HTTP front door (serve: OIP v2 REST, as Triton's
# 8000 beside its gRPC; gateway: the dashboard); COOKLINE_<SERVICE>_HTTP_ADDR overrides host:port.
DEFAULT_HTTP_PORTS = {"serve": 8000, "gateway": 8080}


@dataclass(frozen=True)
class Setting:
    """One environment variable.

    - `value`: the default the code uses when the variable is unset or empty (None: no default).
    - `shown`: the default as the docs print it, when `value` does not say it (e.g. "unset (off)").
    - `scope`: "" for a variable cookline's code reads; "compose" or "make" for one read only there.
    """

    name: str
    doc: str
    value: Any = None
    shown: str = ""
    scope: str = ""

    def default_text(self) -> str:
        return self.shown or (f"`{self.value}`" if self.value is not None else "unset")


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "COOKLINE_GATEWAY_ADDR",
        "Where clients reach the gateway. The gateway listens on this port.",
        f"localhost:{DEFAULT_PORTS['gateway']}",
    ),
    Setting(
        "COOKLINE_GATEWAY_HTTP_ADDR",
        "Where browsers and HTTP clients reach the gateway's dashboard and JSON API "
        "([http-gateway.md](http-gateway.md)). The gateway listens on this port too.",
        f"localhost:{DEFAULT_HTTP_PORTS['gateway']}",
    ),
    Setting(
        "COOKLINE_GATEWAY_PREDICT_ADDR",
        "Where clients reach serve through the gateway's TCP relay for predictions ([serving.md]"
        "(serving.md#the-gateways-relay-port)): when set, the gateway also listens on this port and relays "
        "each connection's bytes untouched to a serve replica (`COOKLINE_SERVE_ADDR`), picked per connection "
        "in turn; TLS and the token are serve's own. Faster than the proxy on the gateway's main port; it "
        "reaches all of serve's gRPC API (cookline and OIP), operator calls included.",
        shown="unset (off)",
    ),
    Setting(
        "COOKLINE_CORS_ORIGINS",
        "Comma-separated origins (`https://app.example.com`, or `*`) whose web pages may call the "
        "gateway's `/api/` from a browser.",
        shown="unset (off)",
    ),
    Setting(
        "COOKLINE_COLLECT_ADDR",
        "Where the gateway, process and train reach collect. Collect listens on this port.",
        f"localhost:{DEFAULT_PORTS['collect']}",
    ),
    Setting(
        "COOKLINE_PROCESS_ADDR",
        "Where train reaches process. Process listens on this port.",
        f"localhost:{DEFAULT_PORTS['process']}",
    ),
    Setting(
        "COOKLINE_TRAIN_ADDR",
        "Where the gateway reaches train. Train listens on this port.",
        f"localhost:{DEFAULT_PORTS['train']}",
    ),
    Setting(
        "COOKLINE_SERVE_ADDR",
        "Where the gateway and clients reach serve. Serve listens on this port. The gateway deploys and "
        "undeploys on every replica this resolves to (each DNS record; each address of an `ipv4:a:p,b:p` list); "
        "see [scaling.md](scaling.md#replicas-and-retries).",
        f"localhost:{DEFAULT_PORTS['serve']}",
    ),
    Setting(
        "COOKLINE_TRAIN_PEERS",
        "`host:port` of every train replica, comma-separated, the chief (the train service the gateway "
        "reaches) first. A run with `train.workers: N` trains on the first N; each replica's worker process "
        "listens for TensorFlow's collectives on its port + 1000 (50053 -> 51053). On one machine, run train "
        "services on separate ports, e.g. `127.0.0.1:50053,127.0.0.1:50063`. See [scaling.md](scaling.md).",
        shown="unset (none)",
    ),
    Setting(
        "COOKLINE_SERVE_HTTP_ADDR",
        "Where clients reach serve's OIP v2 REST API ([http.md](http.md)). Serve listens on this port "
        "too, with the same token, TLS and size limit as gRPC.",
        f"localhost:{DEFAULT_HTTP_PORTS['serve']}",
    ),
    Setting(
        "COOKLINE_BIND_HOST",
        "Interface every service listens on, combined with the port of its own "
        "`*_ADDR`. Use `0.0.0.0` for all interfaces.",
        "127.0.0.1",
    ),
    Setting(
        "COOKLINE_MAX_MESSAGE_MB",
        "Largest gRPC message sent or received, one setting for servers and clients alike; 1 to 2047. A "
        "larger message is refused with RESOURCE_EXHAUSTED, at a bounded memory cost (see [Limits and a full "
        "store](#limits-and-a-full-store)).",
        64,
    ),
    Setting(
        "COOKLINE_SERVE_MAX_IMAGE_BYTES",
        "Largest encoded image (bytes) serve accepts in an image input; a larger one is INVALID_ARGUMENT "
        "naming the input and row ([Serving](serving.md)).",
        8 << 20,
    ),
    Setting(
        "COOKLINE_SERVE_MAX_IMAGE_PIXELS",
        "Largest image, width × height read from its header, serve accepts in an image input (a small "
        "file can declare a huge image).",
        40_000_000,
    ),
    Setting(
        "COOKLINE_SERVE_RECONCILE_S",
        "Seconds between a serve replica's reads of the store's deployed records: a record changed "
        "through another replica (a version swap, a LoadModel sent to one address, a deploy this replica "
        "missed while unreachable) is followed, and a model whose record is gone stops being served here. "
        "0 turns it off (records are then read at start-up only). See [serving.md](serving.md).",
        30,
    ),
    Setting(
        "COOKLINE_SERVE_METRICS_ADDR",
        "`host:port` where serve publishes its statistics as a Prometheus text endpoint (`GET /metrics`), "
        "e.g. `0.0.0.0:9154`; an empty host means `127.0.0.1`.",
        shown="unset (off)",
    ),
    Setting("COOKLINE_LOG_LEVEL", "`DEBUG`, `INFO`, `WARNING` or `ERROR`.", "INFO"),
    Setting(
        "COOKLINE_DATA_DIR",
        "Root of the local-directory store. The bucket is a folder inside it, e.g. "
        "`~/.cookline/store/cookline/`. Only used when `MINIO_ENDPOINT` is unset.",
        "~/.cookline/store",
    ),
    Setting(
        "COOKLINE_BUCKET",
        "The S3 bucket (created at start-up if missing) or the local folder that holds everything.",
        "cookline",
    ),
    Setting(
        "COOKLINE_TRAIN_CACHE_MB",
        "Memory budget of train's epoch cache. The first epoch streams through process; when its "
        "deterministic part (the ops before the first random op such as `shuffle`) fits this budget, "
        "later epochs read it from memory and train runs the random ops itself, seeded per epoch. When "
        "the only random op is `shuffle`, the rows are kept in TensorFlow memory and every batch is "
        "gathered by index inside tf.data (no Python work per batch). Over budget (or `0`), every epoch "
        "streams through process.",
        1024,
    ),
    Setting(
        "COOKLINE_TRAIN_WARM_MODELS",
        "Compiled models train keeps after a run (0 to 64). The next run with the same model, "
        "hyper-parameters and input takes one with its own freshly initialised weights and optimizer "
        "state, and skips tracing the train step (0.3 to 0.5 s on a 2-core machine). Training results "
        "are those of a fresh model; `0` keeps none.",
        2,
    ),
    Setting(
        "COOKLINE_AUTH_TOKEN",
        "Bearer token. When set, every service refuses calls without `authorization: Bearer <token>` "
        "metadata (UNAUTHENTICATED), except the gRPC health and reflection services (probes); every "
        "cookline client (Python, Node.js, Go) and service-to-service call sends it.",
    ),
    Setting(
        "COOKLINE_AUTH_TOKEN_FILE",
        "File holding the bearer token (used when `COOKLINE_AUTH_TOKEN` is empty; surrounding whitespace "
        "is stripped), e.g. a mounted secret. Read by the services and the Python, Node.js and Go "
        "clients.",
    ),
    Setting(
        "COOKLINE_KEEPALIVE_S",
        "Seconds of silence after which a gRPC connection is pinged (keepalive), 1 to 3600; servers accept "
        "pings twice as often, so a stream idle through a long epoch is never cut. The same value "
        "everywhere.",
        30,
    ),
    Setting(
        "COOKLINE_TLS_CERT",
        "PEM certificate (chain) file every service listens with; with `COOKLINE_TLS_KEY`, every port "
        "speaks only TLS. The certificate must name the host clients dial (e.g. `localhost`, `127.0.0.1`, "
        "the compose service name).",
    ),
    Setting("COOKLINE_TLS_KEY", "PEM private key file of `COOKLINE_TLS_CERT`; set both or neither."),
    Setting(
        "COOKLINE_TLS_CA",
        "PEM CA file that clients (Python, Node.js and Go), service-to-service channels and health checks "
        "verify servers against; when set, every cookline channel uses TLS.",
    ),
    Setting(
        "COOKLINE_MAX_CONCURRENT_RPCS",
        "Most RPCs one server runs at once; calls beyond it get RESOURCE_EXHAUSTED at once rather than "
        "waiting in an unbounded queue.",
        1000,
    ),
    Setting(
        "COOKLINE_STAGE_RETRIES",
        "Extra attempts the gateway makes of a stage (collect, train or serve) that failed UNAVAILABLE "
        "(its service died, or the object store stayed unreachable for `COOKLINE_STORE_RETRY_S`); each "
        "waits for the service's health. Collect's versions are content-addressed, so a retried ingest "
        "writes the same version; training continues from the run's last checkpoint; loading a model "
        "again is harmless.",
        3,
    ),
    Setting(
        "COOKLINE_ABANDONED_VERSION_S",
        "Seconds after its last write that an unpublished model version (a claim with no `cookline.json`: "
        "its train was killed mid-publish) counts as abandoned: each train service sweeps such versions' "
        "files when it starts, and `cookline gc` (RegistryService.SweepAbandonedVersions) does on demand. "
        "Keep it well above the longest model export and upload; 0 turns the start-up sweep off. See "
        "[registry.md](registry.md#abandoned-versions).",
        3600,
    ),
    Setting(
        "COOKLINE_UPLOAD_SPOOL_MB",
        "Most MB that collect spools on its scratch disk at once for uploads (UploadDataset: tensor "
        "batches, or a source's files), over every upload in flight; an upload that would pass it ends "
        "RESOURCE_EXHAUSTED naming this setting and its spool is deleted. A full scratch disk ends an "
        "upload the same way. See [clients.md](clients.md#upload-run-predict).",
        20480,
    ),
    Setting(
        "COOKLINE_SHARD_MB",
        "Target size of one dataset shard, in MB of uncompressed rows (read by collect), more than 0 and "
        "at most 4096. Collect holds about two shards per stream it serves, so this bounds its memory.",
        32,
    ),
    Setting(
        "MINIO_ENDPOINT",
        "`host:port` of MinIO or any S3 server; `http://` or `https://` URLs without a path are accepted "
        "too. When set, the S3 backend is used.",
    ),
    Setting(
        "MINIO_ACCESS_KEY",
        "Access key. Required when `MINIO_ENDPOINT` is set, unless `MINIO_ACCESS_KEY_FILE` is.",
        shown="none",
    ),
    Setting(
        "MINIO_ACCESS_KEY_FILE",
        "File holding the access key (surrounding whitespace is stripped). Used when `MINIO_ACCESS_KEY` is empty.",
        shown="none",
    ),
    Setting(
        "MINIO_SECRET_KEY",
        "Secret key. Required when `MINIO_ENDPOINT` is set, unless `MINIO_SECRET_KEY_FILE` is.",
        shown="none",
    ),
    Setting(
        "MINIO_SECRET_KEY_FILE", "File holding the secret key. Used when `MINIO_SECRET_KEY` is empty.", shown="none"
    ),
    Setting(
        "MINIO_SECURE",
        "`1`, `true`, `yes` or `on` switches to HTTPS. An `https://` endpoint does the same.",
        shown="off",
    ),
    Setting("MINIO_REGION", "Region given to the S3 client."),
    Setting(
        "KERAS_HOME",
        "Keras' own folder (read by train): `train.weights: imagenet` reads Keras' standard weights file from "
        "its `models/` subfolder, and nothing is downloaded ([pipeline.md](pipeline.md), Starting from a model).",
        shown="`~/.keras` (`/tmp/.keras` when the home folder is not writable)",
    ),
    Setting("SSL_CERT_FILE", "CA bundle used to verify an HTTPS S3 endpoint.", shown="certifi's bundle"),
    Setting(
        "COOKLINE_SOURCE_ROOTS",
        "Folders (separated by `:`) that local `collect.source` paths (and `train.base` / `train.weights` "
        "files) must lie in, read by the gateway, collect and train. A `..` component, a path outside them, "
        "a symlink leading out, or the local store's folder is PERMISSION_DENIED before anything is opened; "
        "clients elsewhere upload instead ([clients.md](clients.md#local-sources-and-the-source-roots)). Compose: "
        "`/srv/cookline/examples`; Kubernetes: `/srv/cookline/data`.",
        shown="the working directory",
    ),
    Setting(
        "COOKLINE_STORE_WAIT_S",
        "How long a starting service keeps trying to reach an S3 store that is not up yet (compose, "
        "Kubernetes), logging each attempt; then it exits. `0` gives up after the store's own few "
        "retries.",
        60,
    ),
    Setting(
        "COOKLINE_STORE_RETRY_S",
        "How long one object-store call keeps retrying a transient failure (the S3 server restarting, a "
        "dropped connection, a 5xx) with exponential back-off (0.2 s doubling up to 2 s) before the call "
        "fails with UNAVAILABLE; the gateway then retries the stage.",
        30,
    ),
    Setting(
        "COOKLINE_IMAGE",
        "the app image (`make compose-up` uses `localhost/cookline:dev-N`).",
        "cookline:latest",
        scope="compose",
    ),
    Setting(
        "COOKLINE_S3_IMAGE",
        "the S3 server image. It must take MinIO's command line, port 9000 and `MINIO_ROOT_*` variables, "
        "as the SeaweedFS stand-in does.",
        "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z",
        scope="compose",
    ),
    Setting(
        "MINIO_ROOT_USER",
        "MinIO's access key, also given to the services as `MINIO_ACCESS_KEY`.",
        "cookline",
        scope="compose",
    ),
    Setting(
        "MINIO_ROOT_PASSWORD",
        "MinIO's secret key (8 characters or more), also given to the services as `MINIO_SECRET_KEY`.",
        shown="required",
        scope="compose",
    ),
    Setting(
        "COOKLINE_PUBLISH_HOST",
        "host interface the ports are published on; `0.0.0.0` for all.",
        "127.0.0.1",
        scope="compose",
    ),
    Setting(
        "COOKLINE_GATEWAY_PORT` … `COOKLINE_SERVE_PORT",
        "host port published for each service (`COOKLINE_COLLECT_PORT`, `_PROCESS_PORT`, `_TRAIN_PORT` "
        "too). Inside the compose network the services always use 50050-50054.",
        shown="`50050` … `50054`",
        scope="compose",
    ),
    Setting(
        "COOKLINE_SERVE_HTTP_PORT",
        "host port published for serve's REST API (8000 inside the network).",
        8000,
        scope="compose",
    ),
    Setting(
        "COOKLINE_GATEWAY_HTTP_PORT",
        "host port published for the gateway's dashboard and JSON API.",
        8080,
        scope="compose",
    ),
    Setting("MINIO_PORT", "host port published for S3.", 9000, scope="compose"),
    Setting(
        "COOKLINE_EXAMPLES_DIR",
        "host folder mounted read-only at `/srv/cookline/examples` in collect and the gateway, where "
        "relative pipeline sources resolve.",
        shown="`../examples` (relative to `deploy/`)",
        scope="compose",
    ),
    Setting(
        "COMPOSE_PROJECT",
        "project name for `make compose-up` / `compose-down` (containers are `<project>_<service>_1`).",
        "cookline",
        scope="make",
    ),
    Setting(
        "CONTAINERS_CONF",
        "podman settings; the Makefile exports it for every podman command.",
        "deploy/containers.conf",
        scope="make",
    ),
)

BY_NAME = {s.name: s for s in SETTINGS}


def default(name: str) -> Any:
    """The default value the code uses for the variable `name` (KeyError for an undeclared one)."""
    return BY_NAME[name].value
