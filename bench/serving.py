"""Serving benchmark: everything in one run, on the same iris SavedModel.

    .venv/bin/python bench/serving.py [--seconds S] [--rounds N] [--skip-others]   (or `make bench-serving`)

Measures, on this machine (client and servers share its cores):
  - in-process predict: p50 of one row, rows/s at batch 256, through the SavedModel's
    signature (what a user who loads the model gets: the baseline) and through serve's
    XLA-compiled functions (services/serve/compiled.py: the ceiling);
  - bare Python gRPC servers, one caller, the same request bytes: an echo and two that
    only decode, call the signature and encode, on threads and on grpc.aio (info);
  - cookline serve: unary Predict p50/p99 (one row, one caller), directly, through the
    gateway's proxy (its main port) and through the gateway's TCP relay
    (COOKLINE_GATEWAY_PREDICT_ADDR), the three measured call by call in turn so the
    machine's load falls on each alike; PredictStream rows/s with dynamic batching,
    directly, through the proxy and through the relay, taken in turn in short slices
    for the same reason;
  - raw inputs: a small CNN whose SavedModel decodes PNG bytes itself
    (tests/support/raw_models.py), fed the PNG files of examples/data/digits: cookline
    PredictStream of the bytes against the same bytes decoded and predicted in
    process by the same SavedModel (batch 256);
  - cookline serve, KServe 0.21 and MLServer 1.7.1, each serving the model
    (the latter two through a small custom model class, each in its own venv
    under .cache/bench/, created on first use), with the same OIP v2 client:
    one caller (unary p50), then CONCURRENCY callers, one row per ModelInfer;
  - cookline serve and KServe over OIP v2 REST (POST /v2/models/iris/infer,
    JSON tensor data), CONCURRENCY callers on keep-alive connections, with
    one-row and REST_BATCH_ROWS-row requests.
Then prints a table and the ratios against the targets (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

# One TF thread per op pool for every party (the in-process baseline, cookline, KServe,
# MLServer inherit this environment): for a model this small it is the fastest setting
# for all of them. Override by setting the variables before running the bench.
TF_THREADS = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
for _name, _value in TF_THREADS.items():
    os.environ.setdefault(_name, _value)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
CACHE = os.path.join(ROOT, ".cache", "bench")
IRIS_CSV = os.path.join(ROOT, "examples", "data", "iris.csv")
CONCURRENCY = 8  # OIP callers: the peers' calibration load (docs/benchmarks.md)
STREAMS, STREAM_ROWS = 4, 256  # streaming load: streams x rows per message (merged up to MAX_BATCH)
STREAM_SLICES = 4  # direct, proxy and relay streaming taken in turn, in this many slices per round
BIG_MESSAGE_ROWS = 1024  # the same load with larger messages (less per-message overhead)
MAX_BATCH = 1024  # serve's max_batch_size for the model
REST_BATCH_ROWS = 256  # rows of the larger REST request
ROW = np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)
DIGITS = os.path.join(ROOT, "examples", "data", "digits")
RAW_MODEL = "digits"


def digit_pngs(count: int) -> np.ndarray:
    """`count` PNG files of examples/data/digits (cycled), as an object array of bytes."""
    paths = sorted(os.path.join(d, f) for d, _, names in os.walk(DIGITS) for f in names if f.endswith(".png"))
    out = np.empty(count, dtype=object)
    for i in range(count):
        with open(paths[i % len(paths)], "rb") as f:
            out[i] = f.read()
    return out


# --- helpers --------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000  # ms


def sequential_latencies(call, seconds: float) -> list[float]:
    """Latencies (s) of one caller calling back to back for `seconds` (after a warm-up)."""
    for _ in range(50):
        call()
    out, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        call()
        out.append(time.perf_counter() - t)
    return out


def wait_oip_ready(target: str, timeout: float = 300.0, proc: subprocess.Popen | None = None) -> None:
    """Waits until an OIP server answers ServerReady=true (KServe/MLServer have no gRPC health)."""
    import grpc

    from inference import grpc_service_pb2 as oip
    from inference import grpc_service_pb2_grpc as oip_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server for {target} exited with {proc.returncode}")
            try:
                if stub.ServerReady(oip.ServerReadyRequest(), timeout=2).ready:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)  # poll interval
    raise TimeoutError(f"{target} not ready within {timeout:.0f} s")


# --- the model ------------------------------------------------------------------


def deployed_record(max_batch_size: int):
    """The deployed marker of a bench model: version 1, latest, no queue delay."""
    from cookline.v1 import records_pb2, serve_pb2

    return records_pb2.DeployedRecord(
        policy="latest",
        version=1,
        batching=serve_pb2.BatchingConfig(max_batch_size=max_batch_size, max_queue_delay_ms=0),
    )


def make_model(workdir: str) -> tuple[str, str]:
    """Trains the iris MLP in process, exports it, publishes it as iris version 1 in a
    local store and marks it deployed. Returns (SavedModel dir, store root)."""
    import keras

    from cookline.v1 import data_pb2, pipeline_pb2, tensor_pb2
    from services.common import layout
    from services.common.store import LocalStore
    from services.train import models

    data = np.genfromtxt(IRIS_CSV, delimiter=",", skip_header=1, usecols=(0, 1, 2, 3), dtype=np.float32)
    names = np.genfromtxt(IRIS_CSV, delimiter=",", skip_header=1, usecols=(4,), dtype=str)
    classes = sorted(set(names))
    labels = np.array([classes.index(n) for n in names], np.int32)
    spec = pipeline_pb2.TrainSpec(model="mlp", hidden_units=[16], learning_rate=0.01)
    net = models.build(spec, 4, len(classes))
    keras.utils.set_random_seed(7)
    net.fit(data, labels, epochs=30, batch_size=16, verbose=0)
    saved = os.path.join(workdir, "saved_model")
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    fields = {
        "features": data_pb2.FieldSchema(
            name="features", dtype=tensor_pb2.DATA_TYPE_FLOAT32, shape=[4], columns=columns
        )
    }
    inputs = models.export(models.Trained(net, [], fields, "features", classes), saved)

    root = os.path.join(workdir, "store")
    store = LocalStore(os.path.join(root, "cookline"))
    files = {os.path.relpath(os.path.join(d, f), saved): os.path.join(d, f) for d, _, fs in os.walk(saved) for f in fs}
    meta = {
        "name": "iris",
        "version": 1,
        "class_names": classes,
        "feature_columns": columns,
        "inputs": inputs,
        "created_at": layout.now(),
    }
    store.publish(layout.model_prefix("iris", 1), files, layout.MODEL_METADATA, json.dumps(meta).encode())
    layout.write_deployed(store, "iris", deployed_record(MAX_BATCH))
    return saved, root


def make_raw_model(workdir: str, store_root: str) -> str:
    """The PNG-decoding digits CNN, published as "digits" version 1 and marked deployed."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
    import raw_models
    from services.common import layout
    from services.common.store import LocalStore

    saved = os.path.join(workdir, "digits_model")
    inputs = raw_models.digits_model(saved)
    store = LocalStore(os.path.join(store_root, "cookline"))
    raw_models.publish(store, RAW_MODEL, saved, inputs, [str(i) for i in range(10)])
    layout.write_deployed(store, RAW_MODEL, deployed_record(STREAM_ROWS))
    return saved


class InProcess:
    """The baselines: the SavedModel's serving_default called in this process, through
    the very function serve calls it with (services.serve.models.load_predict): the rate a
    user gets by loading the model themselves. And the ceiling: the same model as serve's
    XLA-compiled functions (services.serve.compiled), called in this process."""

    def __init__(self, saved: str):
        from services.serve import compiled
        from services.serve.inputs import InputSpec
        from services.serve.models import load_predict

        self.predict = load_predict(saved)
        self.batch = np.repeat(ROW, STREAM_ROWS, axis=0)
        specs = {"features": InputSpec("features", "float32", [-1, 4], "numeric")}
        self.xla, why_not = compiled.compile_model(
            self.predict.signature, specs, compiled.buckets_for(MAX_BATCH), self.predict
        )
        if self.xla is None:
            raise RuntimeError(f"the bench model does not compile: {why_not}")

    def one_row(self):
        return self.predict({"features": ROW})

    def one_row_spaced(self):
        """One row after 0.5 ms idle, about the gap a server sees between a caller's
        requests: TF's threads and the caches are no longer hot (info only)."""
        time.sleep(0.0005)
        start = time.perf_counter()
        self.one_row()
        return time.perf_counter() - start

    def batched_rows_per_s(self, seconds: float) -> float:
        return rows_per_s(self.predict, {"features": self.batch}, seconds)

    def xla_one_row(self):
        return self.xla({"features": ROW})

    def xla_rows_per_s(self, seconds: float) -> float:
        return rows_per_s(self.xla, {"features": self.batch}, seconds)


def rows_per_s(predict, inputs: dict, seconds: float) -> float:
    """Rows/s of back-to-back in-process calls on the same inputs."""
    rows, count, start = 0, len(next(iter(inputs.values()))), time.perf_counter()
    while time.perf_counter() - start < seconds:
        predict(inputs)
        rows += count
    return rows / (time.perf_counter() - start)


# --- bare gRPC servers: the transport's floor ----------------------------------------

BARE_KINDS = ("echo", "predict", "aio-predict")
BARE_METHOD = "/bench.Bare/Call"


def bare_handler(kind: str, saved: str):
    """The request bytes -> response bytes function of a bare server of `kind`."""
    if kind == "echo":
        return lambda raw: raw
    from cookline import tensors
    from cookline.v1 import serve_pb2
    from services.serve.models import load_predict

    predict = load_predict(saved)

    def handle(raw: bytes) -> bytes:
        request = serve_pb2.PredictRequest.FromString(raw)
        response = serve_pb2.PredictResponse()
        tensors.from_numpy(
            predict({"features": tensors.to_numpy(request.inputs["features"])}), out=response.outputs["scores"]
        )
        return response.SerializeToString()

    return handle


def bare_server(kind: str, port: int, saved: str) -> None:
    """A bare Python gRPC server with one unary method and nothing else: no validation,
    batching, labels, interceptors, health or stats.
      echo:        answers the request bytes;
      predict:     decodes the PredictRequest, calls the model (load_predict, as serve
                   does) and answers a PredictResponse with the scores; threaded server;
      aio-predict: the same on a grpc.aio server, serve's transport.
    The predict kinds are the floor of any Python gRPC server calling this model.
    It listens only once the model is loaded, so a ready channel means ready to answer."""
    import grpc

    handle = bare_handler(kind, saved)

    def handlers(behaviour):
        return (
            grpc.method_handlers_generic_handler(
                "bench.Bare", {"Call": grpc.unary_unary_rpc_method_handler(behaviour)}
            ),
        )

    if kind == "aio-predict":
        import asyncio

        async def call(raw, _context):
            return handle(raw)

        async def run():
            server = grpc.aio.server()
            server.add_generic_rpc_handlers(handlers(call))
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            await server.wait_for_termination()

        asyncio.run(run())
        return

    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers(handlers(lambda raw, _context: handle(raw)))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def start_bare(kind: str, saved: str) -> tuple[subprocess.Popen, str]:
    (port,) = free_ports(1)
    return (subprocess.Popen([sys.executable, __file__, "--bare-server", kind, str(port), saved]), f"127.0.0.1:{port}")


# --- load clients (run as a separate process, so they do not share our GIL) -------


def one_row_oip_request():
    """One row as an OIP ModelInferRequest (raw_input_contents): what every OIP server gets."""
    from inference import grpc_service_pb2 as oip

    request = oip.ModelInferRequest(model_name="iris", raw_input_contents=[ROW.tobytes()])
    request.inputs.add(name="features", datatype="FP32", shape=[1, 4])
    return request


def oip_client(target: str, threads: int, seconds: float) -> dict:
    """CONCURRENCY threads, one row per ModelInfer (raw_input_contents), back to back."""
    import grpc

    from inference import grpc_service_pb2_grpc as oip_grpc

    request = one_row_oip_request()
    channel = grpc.insecure_channel(target)
    stub = oip_grpc.GRPCInferenceServiceStub(channel)
    for _ in range(20):
        stub.ModelInfer(request, timeout=30)

    def call() -> bool:
        try:
            stub.ModelInfer(request, timeout=30)
        except grpc.RpcError:
            return False
        return True

    return closed_loop([call] * threads, seconds)


def closed_loop(calls: list, seconds: float) -> dict:
    """Each of `calls` (a function answering whether the request succeeded) called back to
    back on its own thread for `seconds`: requests/s and latency percentiles of the successes."""
    latencies: list[list[float]] = [[] for _ in calls]
    errors = [0]
    end = time.perf_counter() + seconds

    def caller(call, out: list):
        while time.perf_counter() < end:
            t = time.perf_counter()
            if not call():
                errors[0] += 1
                continue
            out.append(time.perf_counter() - t)

    workers = [threading.Thread(target=caller, args=(call, out)) for call, out in zip(calls, latencies, strict=True)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    flat = [x for out in latencies for x in out]
    return {"req_per_s": len(flat) / elapsed, "p50": pct(flat, 50), "p99": pct(flat, 99), "errors": errors[0]}


def rest_body(rows: int) -> bytes:
    """An OIP REST infer request of `rows` copies of ROW as JSON data, asking for the scores as
    binary data (KServe's model class answers them so; the same request for both servers). It
    has an id: KServe 0.21 answers 500 to a request without one."""
    return json.dumps(
        {
            "id": "1",
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": [rows, 4],
                    "data": np.repeat(ROW, rows, axis=0).tolist(),
                }
            ],
            "outputs": [{"name": "scores", "parameters": {"binary_data": True}}],
        }
    ).encode()


def rest_client(target: str, threads: int, rows: int, seconds: float) -> dict:
    """`threads` callers, each on its own keep-alive HTTP/1.1 connection, POSTing one REST infer
    request of `rows` rows after another."""
    import http.client

    host, port = target.rsplit(":", 1)
    body = rest_body(rows)
    headers = {"Content-Type": "application/json"}

    def call(conn) -> bool:
        conn.request("POST", "/v2/models/iris/infer", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status == 200

    conns = [http.client.HTTPConnection(host, int(port), timeout=30) for _ in range(threads)]
    for conn in conns:
        for _ in range(5):
            if not call(conn):
                raise RuntimeError(f"{target}: REST infer failed while warming up")
    result = closed_loop([lambda conn=conn: call(conn) for conn in conns], seconds)
    return result | {"rows_per_s": result["req_per_s"] * rows}


def stream_message(rows: int, model: str = "iris"):
    """One PredictStream message of `rows` rows (iris feature rows, or for the raw model PNG files)."""
    from cookline import tensors
    from cookline.v1 import model_pb2, serve_pb2

    request = serve_pb2.PredictRequest(model=model_pb2.ModelRef(name=model))
    if model == RAW_MODEL:
        tensors.from_numpy(digit_pngs(rows), out=request.inputs["image"])
    else:
        tensors.from_numpy(np.repeat(ROW, rows, axis=0), out=request.inputs["features"])
    return serve_pb2.PredictStreamRequest(request=request)


def stream_stub(target: str):
    import grpc

    from cookline.v1 import serve_pb2_grpc

    return serve_pb2_grpc.ServeServiceStub(
        grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
    )


def stream_for(stub, message, streams: int, rows: int, seconds: float) -> tuple[int, float, int]:
    """`streams` PredictStreams on `stub`, each sending `message` as fast as flow control allows
    for `seconds`: (rows answered, seconds taken, error answers)."""
    end = time.perf_counter() + seconds
    answered = [0] * streams
    errors = [0]

    def run(i):
        def messages():
            while time.perf_counter() < end:
                yield message

        for response in stub.PredictStream(messages(), timeout=seconds + 60):
            if response.HasField("error"):
                errors[0] += 1
            else:
                answered[i] += rows

    workers = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(answered), time.perf_counter() - start, errors[0]


def stream_client(target: str, streams: int, rows: int, seconds: float, model: str = "iris") -> dict:
    """`streams` PredictStreams, each sending messages of `rows` rows as fast as flow control allows
    (iris feature rows, or for the raw model PNG files)."""
    answered, took, errors = stream_for(stream_stub(target), stream_message(rows, model), streams, rows, seconds)
    return {"rows_per_s": answered / took, "errors": errors}


def paired_stream_client(targets: list[str], streams: int, rows: int, seconds: float, slices: int) -> list[dict]:
    """stream_client for each of `targets`, taken in turn in `slices` slices of seconds/slices each
    (one channel per target, connected and warmed up first): every target meets the same load at
    the same moments, so their rows/s differ by what the targets cost, not by when each ran."""
    message = stream_message(rows)
    stubs = [stream_stub(target) for target in targets]
    for stub in stubs:
        stream_for(stub, message, streams, rows, 0.2)
    totals = [[0, 0.0, 0] for _ in targets]
    for _ in range(slices):
        for stub, total in zip(stubs, totals, strict=True):
            for k, value in enumerate(stream_for(stub, message, streams, rows, seconds / slices)):
                total[k] += value
    return [{"rows_per_s": answered / took, "errors": errors} for answered, took, errors in totals]


def run_client(*args: str) -> dict | list:
    done = subprocess.run([sys.executable, __file__, "--client", *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


# --- the other servers -------------------------------------------------------------


def venv(name: str) -> str:
    """.cache/bench/<name>: a venv with bench/requirements-<name>.txt, created on first
    use and updated when the requirements file changes."""
    path = os.path.join(CACHE, name)
    marker, requirements = os.path.join(path, ".installed"), os.path.join(BENCH, f"requirements-{name}.txt")
    if not os.path.exists(marker) or os.path.getmtime(marker) < os.path.getmtime(requirements):
        print(f"installing {path} (one time, a few minutes) ...", file=sys.stderr)
        if not os.path.exists(os.path.join(path, "bin", "pip")):
            subprocess.run([sys.executable, "-m", "venv", path], check=True)
        pip = os.path.join(path, "bin", "pip")
        subprocess.run([pip, "install", "--quiet", "--upgrade", "pip"], check=True)
        subprocess.run([pip, "install", "--quiet", "-r", requirements], check=True)
        open(marker, "w").close()
    return os.path.join(path, "bin")


KSERVE_HTTP: dict[str, str] = {}  # KServe's REST address, set by start_kserve


def start_kserve(saved: str, workdir: str) -> tuple[subprocess.Popen, str]:
    grpc_port, http_port = free_ports(2)
    proc = subprocess.Popen(
        [
            os.path.join(venv("kserve"), "python"),
            os.path.join(BENCH, "kserve_model.py"),
            saved,
            str(grpc_port),
            str(http_port),
        ],
        stdout=open(os.path.join(workdir, "kserve.log"), "wb"),
        stderr=subprocess.STDOUT,
    )
    KSERVE_HTTP["kserve"] = f"127.0.0.1:{http_port}"
    return proc, f"127.0.0.1:{grpc_port}"


def start_mlserver(saved: str, workdir: str) -> tuple[subprocess.Popen, str]:
    grpc_port, http_port, metrics_port = free_ports(3)
    folder = os.path.join(workdir, "mlserver")
    os.makedirs(folder, exist_ok=True)
    shutil.copy(os.path.join(BENCH, "mlserver_model.py"), folder)
    with open(os.path.join(folder, "settings.json"), "w") as f:
        json.dump(
            {"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port, "host": "127.0.0.1"}, f
        )
    with open(os.path.join(folder, "model-settings.json"), "w") as f:
        json.dump(
            {"name": "iris", "implementation": "mlserver_model.SavedModelRuntime", "parameters": {"uri": saved}}, f
        )
    proc = subprocess.Popen(
        [os.path.join(venv("mlserver"), "mlserver"), "start", folder],
        cwd=folder,
        stdout=open(os.path.join(workdir, "mlserver.log"), "wb"),
        stderr=subprocess.STDOUT,
    )
    return proc, f"127.0.0.1:{grpc_port}"


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- the run ------------------------------------------------------------------------


class Rounds:
    """Measurements taken in interleaved rounds: on a shared machine the load drifts,
    so every baseline is measured next to what it is compared with, and each figure
    is the median over the rounds (p99s pool every sample)."""

    def __init__(self):
        self.values: dict[str, list] = {}

    def add(self, key: str, value) -> None:
        self.values.setdefault(key, []).append(value)

    def latency(self, key: str, call, seconds: float) -> None:
        lat = sequential_latencies(call, seconds)
        self.add(key + ".p50", pct(lat, 50))
        self.add(key + ".samples", lat)

    def paired_latency(self, calls: dict, seconds: float) -> None:
        """Latencies of one caller calling each of `calls` in turn, one call each, for
        `seconds` per call (after a warm-up): every target meets the same load at the same
        moments, so their p50s differ by what the targets cost, not by when each ran."""
        for call in calls.values():
            for _ in range(50):
                call()
        out: dict[str, list[float]] = {key: [] for key in calls}
        end = time.perf_counter() + seconds * len(calls)
        while time.perf_counter() < end:
            for key, call in calls.items():
                t = time.perf_counter()
                call()
                out[key].append(time.perf_counter() - t)
        for key, lat in out.items():
            self.add(key + ".p50", pct(lat, 50))
            self.add(key + ".samples", lat)

    def result(self) -> dict:
        out: dict = {}
        for key, values in self.values.items():
            name, field = key.rsplit(".", 1)
            if field == "samples":
                out.setdefault(name, {})["p99"] = pct([x for v in values for x in v], 99)
            elif isinstance(values[0], dict):  # a load client's result: median of each figure
                out[name] = {k: float(np.median([v[k] for v in values])) for k in values[0]}
            else:
                out.setdefault(name, {})[field] = float(np.median(values))
        return out


def main(seconds: float, rounds: int, skip_others: bool) -> None:
    import grpc

    from cookline import channels, tensors
    from cookline.stack import Stack
    from cookline.v1 import model_pb2, serve_pb2, serve_pb2_grpc
    from inference import grpc_service_pb2_grpc as oip_grpc

    workdir = tempfile.mkdtemp(prefix="cookline-bench-")
    saved, store_root = make_model(workdir)
    baseline = InProcess(saved)
    from services.serve.models import load_predict

    raw_predict = load_predict(make_raw_model(workdir, store_root))
    raw_batch = {"image": digit_pngs(STREAM_ROWS)}
    request = serve_pb2.PredictRequest(model=model_pb2.ModelRef(name="iris"))
    tensors.from_numpy(ROW, out=request.inputs["features"])
    payload = request.SerializeToString()
    oip_request = one_row_oip_request()

    ports = dict(zip(("serve", "gateway", "serve_http", "gateway_http", "gateway_predict"), free_ports(5), strict=True))
    env = dict(os.environ, COOKLINE_DATA_DIR=store_root, TF_CPP_MIN_LOG_LEVEL="2", COOKLINE_LOG_LEVEL="WARNING")
    env.pop("MINIO_ENDPOINT", None)
    for service, port in ports.items():  # and COOKLINE_SERVE_HTTP_ADDR, COOKLINE_GATEWAY_PREDICT_ADDR, ...
        env[f"COOKLINE_{service.upper()}_ADDR"] = f"127.0.0.1:{port}"
    servers: list[subprocess.Popen] = []
    try:
        bare_addrs = {}
        for kind in BARE_KINDS:
            proc, bare_addrs[kind] = start_bare(kind, saved)
            servers.append(proc)
        oip_targets = {}
        if not skip_others:
            for name, start in (("kserve", start_kserve), ("mlserver", start_mlserver)):
                proc, oip_targets[name] = start(saved, workdir)
                servers.append(proc)
        with Stack(env, log_dir=os.path.join(workdir, "logs")) as stack:
            stack.start("serve")
            stack.start("gateway")
            stack.wait_healthy(timeout=180)
            serve_addr, gateway_addr, relay_addr = (
                f"127.0.0.1:{ports[s]}" for s in ("serve", "gateway", "gateway_predict")
            )
            channels.wait_healthy(serve_addr, timeout=180, service="iris")
            channels.wait_healthy(serve_addr, timeout=180, service=RAW_MODEL)
            oip_targets = {"cookline": serve_addr, **oip_targets}
            for target in oip_targets.values():
                wait_oip_ready(target)
            rest_targets = {"cookline": f"127.0.0.1:{ports['serve_http']}", **KSERVE_HTTP}
            bare_calls = {}
            for kind, addr in bare_addrs.items():
                bare_channel = grpc.insecure_channel(addr)
                grpc.channel_ready_future(bare_channel).result(timeout=120)  # listens once its model is loaded
                bare_calls[kind] = bare_channel.unary_unary(BARE_METHOD)
            direct = serve_pb2_grpc.ServeServiceStub(grpc.insecure_channel(serve_addr))
            oip_stubs = {
                name: oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(target))
                for name, target in oip_targets.items()
            }
            proxied = serve_pb2_grpc.ServeServiceStub(grpc.insecure_channel(gateway_addr))
            relayed = serve_pb2_grpc.ServeServiceStub(grpc.insecure_channel(relay_addr))
            r = Rounds()
            for i in range(rounds):
                print(f"round {i + 1}/{rounds} ...", file=sys.stderr)
                r.latency("in_process", baseline.one_row, seconds)
                spaced = [baseline.one_row_spaced() for _ in range(int(seconds * 1000))]
                r.add("in_process_spaced.p50", pct(spaced, 50))
                for kind, call in bare_calls.items():
                    r.latency(f"bare_{kind}", lambda call=call: call(payload, timeout=10), seconds)
                r.paired_latency(
                    {
                        f"{name}_unary": lambda stub=stub: stub.Predict(request, timeout=10)
                        for name, stub in (("cookline", direct), ("gateway", proxied), ("relay", relayed))
                    },
                    seconds,
                )
                r.add("in_process.rows_per_s", baseline.batched_rows_per_s(seconds))
                r.latency("in_process_xla", baseline.xla_one_row, seconds)
                r.add("in_process_xla.rows_per_s", baseline.xla_rows_per_s(seconds))
                for name, stub in oip_stubs.items():  # one caller, the same client for every server
                    r.latency(f"{name}_oip_unary", lambda stub=stub: stub.ModelInfer(oip_request, timeout=10), seconds)
                paired = run_client(
                    "paired-stream",
                    ",".join((serve_addr, gateway_addr, relay_addr)),
                    str(STREAMS),
                    str(STREAM_ROWS),
                    str(seconds),
                    str(STREAM_SLICES),
                )
                for name, result in zip(("cookline", "gateway", "relay"), paired, strict=True):
                    r.add(f"{name}_stream.run", result)
                r.add(
                    "cookline_stream_big.run",
                    run_client("stream", serve_addr, str(STREAMS), str(BIG_MESSAGE_ROWS), str(seconds)),
                )
                r.add("in_process_raw.rows_per_s", rows_per_s(raw_predict, raw_batch, seconds))
                r.add(
                    "cookline_raw_stream.run",
                    run_client("stream", serve_addr, str(STREAMS), str(STREAM_ROWS), str(seconds), RAW_MODEL),
                )
                for name, target in oip_targets.items():
                    r.add(f"{name}_oip.run", run_client("oip", target, str(CONCURRENCY), str(seconds)))
                for name, target in rest_targets.items():
                    for rows in (1, REST_BATCH_ROWS):
                        r.add(
                            f"{name}_rest_{rows}.run",
                            run_client("rest", target, str(CONCURRENCY), str(rows), str(seconds)),
                        )
    finally:
        for proc in servers:
            stop(proc)
    report(r.result(), rounds)
    shutil.rmtree(workdir, ignore_errors=True)


def report(r: dict, rounds: int) -> None:
    ip, echo, xla = r["in_process"], r["bare_echo"], r["in_process_xla"]
    rows = [
        ("in-process signature, 1 row", f"p50 {ip['p50']:.3f} ms  p99 {ip['p99']:.3f} ms"),
        ("  calls 0.5 ms apart (info)", f"p50 {r['in_process_spaced']['p50']:.3f} ms"),
        (f"in-process signature, batch {STREAM_ROWS}", f"{ip['rows_per_s']:,.0f} rows/s"),
        ("in-process XLA (serve's compiled path), 1 row", f"p50 {xla['p50']:.3f} ms  p99 {xla['p99']:.3f} ms"),
        (f"in-process XLA, batch {STREAM_ROWS} (the ceiling)", f"{xla['rows_per_s']:,.0f} rows/s"),
        ("bare gRPC echo (Python)", f"p50 {echo['p50']:.3f} ms  p99 {echo['p99']:.3f} ms"),
        (
            "bare gRPC predict server, threaded (signature)",
            f"p50 {r['bare_predict']['p50']:.3f} ms  p99 {r['bare_predict']['p99']:.3f} ms",
        ),
        (
            "bare grpc.aio predict server (signature)",
            f"p50 {r['bare_aio-predict']['p50']:.3f} ms  p99 {r['bare_aio-predict']['p99']:.3f} ms",
        ),
        (
            "cookline Predict, 1 row, 1 caller",
            f"p50 {r['cookline_unary']['p50']:.3f} ms  p99 {r['cookline_unary']['p99']:.3f} ms",
        ),
        ("  via gateway proxy", f"p50 {r['gateway_unary']['p50']:.3f} ms  p99 {r['gateway_unary']['p99']:.3f} ms"),
        ("  via gateway relay", f"p50 {r['relay_unary']['p50']:.3f} ms  p99 {r['relay_unary']['p99']:.3f} ms"),
    ]
    for name in ("cookline", "kserve", "mlserver"):
        if f"{name}_oip_unary" in r:
            o = r[f"{name}_oip_unary"]
            rows.append((f"{name} OIP ModelInfer, 1 row, 1 caller", f"p50 {o['p50']:.3f} ms  p99 {o['p99']:.3f} ms"))
    rows += [
        (
            f"cookline PredictStream, {STREAMS} streams x {STREAM_ROWS} rows/msg",
            f"{r['cookline_stream']['rows_per_s']:,.0f} rows/s",
        ),
        ("  via gateway proxy", f"{r['gateway_stream']['rows_per_s']:,.0f} rows/s"),
        ("  via gateway relay", f"{r['relay_stream']['rows_per_s']:,.0f} rows/s"),
        (
            f"cookline PredictStream, {STREAMS} streams x {BIG_MESSAGE_ROWS} rows/msg",
            f"{r['cookline_stream_big']['rows_per_s']:,.0f} rows/s",
        ),
        ("raw PNG bytes: in-process decode + predict, batch 256", f"{r['in_process_raw']['rows_per_s']:,.0f} rows/s"),
        (
            f"raw PNG bytes: cookline PredictStream, {STREAMS} streams x {STREAM_ROWS} images/msg",
            f"{r['cookline_raw_stream']['rows_per_s']:,.0f} rows/s  errors {r['cookline_raw_stream']['errors']:.0f}",
        ),
    ]
    for name in ("cookline", "kserve", "mlserver"):
        if f"{name}_oip" in r:
            o = r[f"{name}_oip"]
            rows.append(
                (
                    f"{name} OIP ModelInfer, {CONCURRENCY} callers, 1 row",
                    f"{o['req_per_s']:,.0f} req/s  p50 {o['p50']:.2f} ms  p99 {o['p99']:.2f} ms  errors {o['errors']}",
                )
            )
    for name in ("cookline", "kserve"):
        for n in (1, REST_BATCH_ROWS):
            if f"{name}_rest_{n}" in r:
                o = r[f"{name}_rest_{n}"]
                rows.append(
                    (
                        f"{name} OIP REST infer, {CONCURRENCY} callers, {n} row{'s' if n > 1 else ''}",
                        f"{o['req_per_s']:,.0f} req/s ({o['rows_per_s']:,.0f} rows/s)  p50 {o['p50']:.2f} ms  "
                        f"p99 {o['p99']:.2f} ms  errors {o['errors']}",
                    )
                )
    width = max(len(a) for a, _ in rows)
    print(
        "\nTF threads: "
        + ", ".join(f"{k}={os.environ[k]}" for k in TF_THREADS)
        + f"; {os.cpu_count()} CPUs; load clients run on the same machine; median of {rounds} interleaved rounds"
    )
    print("\n| measurement | result |\n|---|---|")
    for a, b in rows:
        print(f"| {a:<{width}} | {b} |")

    stream, gateway_stream = r["cookline_stream"]["rows_per_s"], r["gateway_stream"]["rows_per_s"]
    proxy_ms = r["gateway_unary"]["p50"] - r["cookline_unary"]["p50"]
    relay_ms = r["relay_unary"]["p50"] - r["cookline_unary"]["p50"]
    relay_stream = r["relay_stream"]["rows_per_s"]
    checks = []
    ours = r["cookline_oip_unary"]
    for name in ("kserve", "mlserver"):
        if f"{name}_oip_unary" in r:
            other = r[f"{name}_oip_unary"]
            checks.append(
                (
                    f"OIP unary p50, 1 caller, vs {name}",
                    f"{ours['p50']:.3f} vs {other['p50']:.3f} ms",
                    ours["p50"] / other["p50"],
                    "<= 0.60",
                    ours["p50"] <= 0.6 * other["p50"],
                )
            )
    ours = r["cookline_oip"]
    for name in ("kserve", "mlserver"):
        if f"{name}_oip" in r:
            other = r[f"{name}_oip"]
            checks.append(
                (
                    f"OIP throughput, {CONCURRENCY} callers, vs {name}, p99 not higher",
                    f"{ours['req_per_s']:,.0f} vs {other['req_per_s']:,.0f} req/s; "
                    f"p99 {ours['p99']:.2f} vs {other['p99']:.2f} ms",
                    ours["req_per_s"] / other["req_per_s"],
                    ">= 2.00",
                    ours["req_per_s"] >= 2.0 * other["req_per_s"] and ours["p99"] <= other["p99"],
                )
            )
    checks += [
        (
            f"streaming ({STREAM_ROWS}-row messages) vs in-process signature at batch {STREAM_ROWS}",
            f"{stream:,.0f} vs {ip['rows_per_s']:,.0f} rows/s",
            stream / ip["rows_per_s"],
            ">= 1.00",
            stream >= ip["rows_per_s"],
        ),
        (
            f"  streaming vs the ceiling (in-process XLA at batch {STREAM_ROWS})",
            f"{stream:,.0f} vs {xla['rows_per_s']:,.0f} rows/s",
            stream / xla["rows_per_s"],
            "(info)",
            None,
        ),
        (
            f"  same with {BIG_MESSAGE_ROWS}-row messages vs in-process signature",
            f"{r['cookline_stream_big']['rows_per_s']:,.0f} rows/s",
            r["cookline_stream_big"]["rows_per_s"] / ip["rows_per_s"],
            "(info)",
            None,
        ),
        (
            "  cookline Predict p50 over the bare grpc.aio predict server",
            f"{r['cookline_unary']['p50'] - r['bare_aio-predict']['p50']:+.3f} ms",
            r["cookline_unary"]["p50"] / r["bare_aio-predict"]["p50"],
            "(info)",
            None,
        ),
        (
            "raw PNG streaming >= 0.5x in-process decode + predict",
            f"{r['cookline_raw_stream']['rows_per_s']:,.0f} vs {r['in_process_raw']['rows_per_s']:,.0f}",
            r["cookline_raw_stream"]["rows_per_s"] / r["in_process_raw"]["rows_per_s"],
            ">= 0.50",
            r["cookline_raw_stream"]["rows_per_s"] >= 0.5 * r["in_process_raw"]["rows_per_s"],
        ),
        (
            "gateway proxy (main port) overhead, unary p50 <= +0.15 ms",
            f"{proxy_ms:+.3f} ms ({r['gateway_unary']['p50']:.3f} vs {r['cookline_unary']['p50']:.3f} ms)",
            r["gateway_unary"]["p50"] / r["cookline_unary"]["p50"],
            "<= +0.15 ms",
            proxy_ms <= 0.15,
        ),
        (
            "gateway proxy (main port), streaming rows/s vs direct",
            f"{gateway_stream:,.0f} vs {stream:,.0f} rows/s",
            gateway_stream / stream,
            ">= 0.90",
            gateway_stream >= 0.9 * stream,
        ),
        (
            "gateway relay (predict port) overhead, unary p50 <= +0.15 ms",
            f"{relay_ms:+.3f} ms ({r['relay_unary']['p50']:.3f} vs {r['cookline_unary']['p50']:.3f} ms)",
            r["relay_unary"]["p50"] / r["cookline_unary"]["p50"],
            "<= +0.15 ms",
            relay_ms <= 0.15,
        ),
        (
            "gateway relay (predict port), streaming rows/s vs direct",
            f"{relay_stream:,.0f} vs {stream:,.0f} rows/s",
            relay_stream / stream,
            ">= 0.90",
            relay_stream >= 0.9 * stream,
        ),
    ]
    for n in (1, REST_BATCH_ROWS):
        if f"kserve_rest_{n}" in r:
            ours, other = r[f"cookline_rest_{n}"], r[f"kserve_rest_{n}"]
            checks.append(
                (
                    f"OIP REST throughput vs kserve, {n} row{'s' if n > 1 else ''}, p99 not higher",
                    f"{ours['req_per_s']:,.0f} vs {other['req_per_s']:,.0f} req/s; "
                    f"p99 {ours['p99']:.2f} vs {other['p99']:.2f} ms",
                    ours["req_per_s"] / other["req_per_s"],
                    ">= 1.50",
                    ours["req_per_s"] >= 1.5 * other["req_per_s"] and ours["p99"] <= other["p99"],
                )
            )
    print("\n| target | measured | ratio | goal | met |\n|---|---|---|---|---|")
    for target, measured, ratio, goal, met in checks:
        mark = "" if met is None else ("yes" if met else "NO")
        print(f"| {target} | {measured} | {ratio:.2f} | {goal} | {mark} |")


if __name__ == "__main__":
    if len(sys.argv) > 4 and sys.argv[1] == "--bare-server":
        bare_server(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) > 2 and sys.argv[1] == "--client":
        kind, args = sys.argv[2], sys.argv[3:]
        if kind == "oip":
            print(json.dumps(oip_client(args[0], int(args[1]), float(args[2]))))
        elif kind == "paired-stream":
            print(
                json.dumps(
                    paired_stream_client(args[0].split(","), int(args[1]), int(args[2]), float(args[3]), int(args[4]))
                )
            )
        elif kind == "rest":
            print(json.dumps(rest_client(args[0], int(args[1]), int(args[2]), float(args[3]))))
        else:
            print(json.dumps(stream_client(args[0], int(args[1]), int(args[2]), float(args[3]), *args[4:5])))
    else:
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--seconds", type=float, default=2.0, help="length of each measurement in a round")
        parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every measurement")
        parser.add_argument("--skip-others", action="store_true", help="skip KServe and MLServer")
        options = parser.parse_args()
        main(options.seconds, options.rounds, options.skip_others)
