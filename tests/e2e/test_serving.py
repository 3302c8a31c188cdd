"""Serving at production grade, against the five services as real processes on S3:
model lifecycle (version policies, deployed marker, warm-up, per-model health), hot
swap with zero failed requests, dynamic batching and its statistics, bad input and
cancellation, and the gateway's prediction proxy."""

import json
import os
import threading
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cookline import channels, tensors
from cookline.client import Client
from cookline.config import address
from cookline.v1 import model_pb2, serve_pb2, serve_pb2_grpc
from helpers import ROOT, free_ports
from services.common import layout

# examples/iris.yaml with fewer epochs: these tests need two versions, not accuracy.
with open(os.path.join(ROOT, "examples", "iris.yaml"), encoding="utf-8") as _f:
    PIPELINE = _f.read().replace("epochs: 60", "epochs: 15")
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], np.float32)


@pytest.fixture(scope="module")
def serve(env):
    return serve_pb2_grpc.ServeServiceStub(channels.channel("serve", env))


@pytest.fixture(scope="module")
def versions(env):
    """Two published versions of "iris" (two runs through the gateway); the second is deployed."""
    with Client(env=env) as client:
        for _ in range(2):
            assert client.run_and_wait(PIPELINE, base_dir=ROOT)[0].reason == ""
    return 1, 2


def request(features=ROWS, version=0, name="iris") -> serve_pb2.PredictRequest:
    req = serve_pb2.PredictRequest(model=model_pb2.ModelRef(name=name, version=version))
    tensors.from_numpy(features, out=req.inputs["features"])
    return req


def load(serve, version=0, alias="", **batching) -> serve_pb2.ModelMetadata:
    req = serve_pb2.LoadModelRequest(model=model_pb2.ModelRef(name="iris", version=version), alias=alias)
    if batching:
        req.batching.CopyFrom(serve_pb2.BatchingConfig(**batching))
    return serve.LoadModel(req, timeout=120).metadata


def rpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    return info.value


def health_of(env, name: str) -> int:
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(address("serve", env)))
    return stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status


def stats_of(serve, version: int) -> serve_pb2.ModelStats:
    models = serve.GetStats(serve_pb2.GetStatsRequest(name="iris"), timeout=10).models
    return [m for m in models if m.model.version == version and m.ready][0]


# --- lifecycle ------------------------------------------------------------------------


def test_version_policies_latest_specific_and_alias(serve, store, versions):
    meta = load(serve, version=1)
    assert meta.model.version == 1 and meta.version_policy == "version"
    assert serve.Predict(request(), timeout=30).model.version == 1
    assert json.loads(store.get_bytes("models/iris/deployed.json"))["version"] == 1

    layout.write_alias(store, "iris", "stable", 2)
    meta = load(serve, alias="stable")
    assert meta.model.version == 2 and meta.version_policy == "alias:stable"
    assert json.loads(store.get_bytes("models/iris/deployed.json"))["alias"] == "stable"

    load(serve, version=1)
    meta = load(serve)  # version 0: the newest
    assert meta.model.version == 2 and meta.version_policy == "latest"
    assert serve.Predict(request(), timeout=30).model.version == 2

    err = rpc_error(load, serve, alias="nosuch")
    assert err.code() == grpc.StatusCode.NOT_FOUND and "nosuch" in err.details()
    err = rpc_error(load, serve, version=1, alias="stable")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "model.version" in err.details()
    err = rpc_error(load, serve, max_batch_size=70000)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "batching.max_batch_size" in err.details()


def test_unload_then_model_is_unavailable_and_not_serving(env, serve, store, versions):
    load(serve)
    assert health_of(env, "iris") == health_pb2.HealthCheckResponse.SERVING
    assert serve.UnloadModel(serve_pb2.UnloadModelRequest(name="iris"), timeout=30).model.version == 2
    assert not store.exists("models/iris/deployed.json")
    assert health_of(env, "iris") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert health_of(env, "") == health_pb2.HealthCheckResponse.SERVING
    err = rpc_error(serve.Predict, request(), timeout=30)
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "iris" in err.details()
    # metadata still answers from the store
    meta = serve.GetModelMetadata(
        serve_pb2.GetModelMetadataRequest(model=model_pb2.ModelRef(name="iris")), timeout=30
    ).metadata
    assert meta.model.version == 2 and list(meta.inputs["features"].shape) == [-1, 4]
    err = rpc_error(serve.UnloadModel, serve_pb2.UnloadModelRequest(name="iris"), timeout=30)
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_overall_health_stays_serving_while_a_model_loads(env, serve, versions):
    if health_of(env, "iris") == health_pb2.HealthCheckResponse.SERVING:
        serve.UnloadModel(serve_pb2.UnloadModelRequest(name="iris"), timeout=30)
    loader = threading.Thread(target=load, args=(serve,))
    loader.start()
    overall = []
    while loader.is_alive():
        overall.append(health_of(env, ""))
    loader.join()
    assert overall and set(overall) == {health_pb2.HealthCheckResponse.SERVING}
    assert health_of(env, "iris") == health_pb2.HealthCheckResponse.SERVING


def test_a_fresh_serve_process_loads_what_is_deployed(stack, env, serve, versions):
    running, _ = stack
    load(serve, version=1, max_batch_size=32, max_queue_delay_ms=5)
    assert running.stop("serve") == 0
    (metrics_port,) = free_ports(1, set())
    running.env["COOKLINE_SERVE_METRICS_ADDR"] = f"127.0.0.1:{metrics_port}"  # the Prometheus endpoint, too
    running.start("serve")
    channels.wait_healthy(address("serve", env), timeout=120, service="iris")  # ready only once warm
    # wait_for_ready: this stub's channel saw the old process go away and may still be in its reconnect backoff
    assert serve.Predict(request(), timeout=30, wait_for_ready=True).model.version == 1
    stats = stats_of(serve, 1)
    assert (stats.batching.max_batch_size, stats.batching.max_queue_delay_ms) == (32, 5)

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    assert 'cookline_serve_requests_total{model="iris",version="1"} 1.0' in text
    assert 'cookline_serve_batch_size_rows_bucket{le="4",model="iris",version="1"} 1.0' in text
    assert 'cookline_serve_model_ready{model="iris",version="1"} 1.0' in text
    assert 'cookline_serve_latency_ms{model="iris",quantile="0.99",version="1"}' in text
    assert "cookline_serve_active_streams 0.0" in text


# --- hot swap ---------------------------------------------------------------------------


def test_hot_swap_while_streaming_fails_no_request(serve, versions):
    load(serve, version=1)
    stop, seen_v1, seen_v2 = threading.Event(), threading.Event(), threading.Event()
    outcomes = []  # (correlation id, version or error)
    counts = {1: 0, 2: 0}

    def messages():
        i = 0
        while not stop.is_set():
            yield serve_pb2.PredictStreamRequest(correlation_id=str(i), request=request(ROWS[i % 3 : i % 3 + 1]))
            i += 1

    def stream():
        for response in serve.PredictStream(messages(), timeout=300):
            if response.HasField("error"):
                outcomes.append((response.correlation_id, f"{response.error.code}: {response.error.message}"))
            else:
                outcomes.append((response.correlation_id, response.result.model.version))
                counts[response.result.model.version] += 1
                if counts[1] >= 200:
                    seen_v1.set()
                if counts[2] >= 200:
                    seen_v2.set()

    unary_failures = []

    def unary_caller():
        while not stop.is_set():
            try:
                serve.Predict(request(), timeout=30)
            except grpc.RpcError as exc:
                unary_failures.append(exc.code())

    threads = [threading.Thread(target=stream)] + [threading.Thread(target=unary_caller) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        assert seen_v1.wait(120), "no responses from version 1"  # streaming before the swap
        assert load(serve, version=2).model.version == 2
        assert seen_v2.wait(120), "responses did not switch to version 2"
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    failures = [o for o in outcomes if isinstance(o[1], str)]
    assert failures == [] and unary_failures == []
    assert [o[0] for o in outcomes] == [str(i) for i in range(len(outcomes))]  # one answer each, in order
    served = [o[1] for o in outcomes]
    switch = served.index(2)
    assert switch >= 200 and set(served[:switch]) == {1} and set(served[switch:]) == {2}


# --- batching and statistics -----------------------------------------------------------


def test_batching_merges_concurrent_requests_and_exports_stats(serve, versions):
    load(serve, version=2, max_batch_size=64, max_queue_delay_ms=20)
    before = stats_of(serve, 2)
    assert before.requests == 0 and before.batching.max_batch_size == 64

    def caller():
        for _ in range(10):
            assert serve.Predict(request(ROWS[:1]), timeout=30).model.version == 2

    def streamer():
        msgs = (serve_pb2.PredictStreamRequest(correlation_id=str(i), request=request(ROWS[:2])) for i in range(40))
        assert all(r.HasField("result") for r in serve.PredictStream(msgs, timeout=60))

    threads = [threading.Thread(target=caller) for _ in range(8)] + [threading.Thread(target=streamer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = stats_of(serve, 2)
    assert stats.requests == 80 + 40 and stats.rows == 80 + 80 and stats.failed_requests == 0
    assert sum(size * n for size, n in stats.batch_size_counts.items()) == stats.rows
    assert sum(stats.requests_per_batch_counts.values()) == stats.batches
    assert max(stats.requests_per_batch_counts) > 1 and max(stats.batch_size_counts) > 2  # merged
    assert stats.batches < stats.requests
    assert max(stats.batch_size_counts) <= 64
    assert 0 < stats.latency_ms.p50 <= stats.latency_ms.p99
    assert stats.queue_delay_ms.p99 > 0


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: request(ROWS.astype(np.int32)), ["inputs['features']", "int32", "float32"]),
        (lambda: request(ROWS[0]), ["inputs['features']", "shape [4]"]),
        (lambda: request(ROWS[:, :3]), ["inputs['features']", "3 features", "expects 4"]),
    ],
)
def test_bad_tensor_is_invalid_argument_naming_the_input(serve, versions, make, words):
    load(serve)
    err = rpc_error(serve.Predict, make(), timeout=30)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert all(w in err.details() for w in words), err.details()


def test_unknown_input_name_is_invalid_argument(serve, versions):
    req = request()
    tensors.from_numpy(ROWS, out=req.inputs["pixels"])
    err = rpc_error(serve.Predict, req, timeout=30)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "inputs['pixels']" in err.details()


def test_unknown_model_or_version_is_not_found_and_unloaded_version_unavailable(serve, versions):
    load(serve, version=2)
    for req, word in [(request(name="nosuch"), "nosuch"), (request(version=99), "99")]:
        err = rpc_error(serve.Predict, req, timeout=30)
        assert err.code() == grpc.StatusCode.NOT_FOUND and word in err.details()
    err = rpc_error(serve.Predict, request(version=1), timeout=30)  # published, but not the one loaded
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "version 1" in err.details()


def test_requests_over_the_limits_are_resource_exhausted(env, serve, versions):
    from services.serve.models import MAX_ROWS

    load(serve)
    err = rpc_error(serve.Predict, request(np.zeros((MAX_ROWS + 1, 4), np.float32)), timeout=60)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "rows" in err.details()
    # over COOKLINE_MAX_MESSAGE_MB (64): refused by serve itself (this channel has no send limit)
    raw = serve_pb2_grpc.ServeServiceStub(grpc.insecure_channel(address("serve", env)))
    err = rpc_error(raw.Predict, request(np.zeros((65 << 18, 1), np.float32)), timeout=60)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_stream_goes_on_after_a_bad_message_unless_fail_fast(serve, versions):
    load(serve)
    msgs = [
        serve_pb2.PredictStreamRequest(correlation_id="a", request=request()),
        serve_pb2.PredictStreamRequest(correlation_id="b", request=request(ROWS[:, :2])),
        serve_pb2.PredictStreamRequest(correlation_id="c", request=request(name="nosuch")),
        serve_pb2.PredictStreamRequest(correlation_id="d", request=request()),
    ]
    out = list(serve.PredictStream(iter(msgs), timeout=60))
    assert [r.correlation_id for r in out] == ["a", "b", "c", "d"]
    assert (
        out[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "inputs['features']" in out[1].error.message
    )
    assert out[2].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert out[3].result.outputs["scores"].shape == [3, 3]

    msgs[1].fail_fast = True
    call = serve.PredictStream(iter(msgs), timeout=60)
    assert next(call).correlation_id == "a"
    err = rpc_error(next, call)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "inputs['features']" in err.details()


# --- cancellation ---------------------------------------------------------------------------


def _proc_status(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, v in (line.split(":", 1) for line in f)}


def _cancel_streams(serve, count: int) -> None:
    """Opens `count` streams at once, gets one answer on each, then cancels them all."""
    gates, calls = [], []
    for _ in range(count):
        gate = threading.Event()

        def messages(gate=gate):
            yield serve_pb2.PredictStreamRequest(correlation_id="0", request=request())
            gate.wait()  # keep the stream open (no more messages) until the test cancels it

        call = serve.PredictStream(messages(), timeout=120)
        gates.append(gate)
        calls.append(call)
    for call in calls:
        assert next(call).HasField("result")
    for call, gate in zip(calls, gates, strict=True):
        call.cancel()
        gate.set()


def _wait_for(condition, timeout=60):
    """Polls a condition of the server's state until it holds (or fails after `timeout` s)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)  # poll interval, not a readiness stand-in


def test_cancelled_streams_release_threads_and_memory(stack, serve, versions):
    load(serve)
    pid = stack[0].procs["serve"].pid

    def active():
        return serve.GetStats(serve_pb2.GetStatsRequest(), timeout=10).active_streams

    _cancel_streams(serve, 100)  # warm-up: grows gRPC's worker pool to its working size
    _wait_for(lambda: active() == 0)
    baseline = _proc_status(pid)
    _cancel_streams(serve, 100)
    _wait_for(lambda: active() == 0)  # the server stopped working for every cancelled stream

    def threads():
        return int(_proc_status(pid)["Threads"])

    _wait_for(lambda: threads() <= int(baseline["Threads"]))
    rss_kb = int(_proc_status(pid)["VmRSS"].split()[0])
    assert rss_kb <= int(baseline["VmRSS"].split()[0]) + 32 * 1024, "memory did not return to baseline"


# --- gateway proxy ----------------------------------------------------------------------------


def test_gateway_proxies_predict_and_predict_stream(env, serve, versions):
    load(serve)
    with Client(env=env, serve=address("gateway", env)) as via_gateway, Client(env=env) as direct:
        assert via_gateway.predict("iris", ROWS) == direct.predict("iris", ROWS)
        # stream messages merge into batches as they arrive, and each batch size runs its own XLA program:
        # the same answers, to float rounding
        proxied, straight = list(via_gateway.predict_stream("iris", ROWS)), list(direct.predict_stream("iris", ROWS))
        assert [(i, a["label"], e) for i, a, e in proxied] == [(i, a["label"], e) for i, a, e in straight]
        for (_, a, _), (_, b, _) in zip(proxied, straight, strict=True):
            assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)
        assert via_gateway.model_metadata("iris") == direct.model_metadata("iris")
        err = rpc_error(via_gateway.predict, "iris", ROWS[:, :3])
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "inputs['features']" in err.details()
        err = rpc_error(via_gateway.predict, "nosuch", ROWS)
        assert err.code() == grpc.StatusCode.NOT_FOUND
        err = rpc_error(via_gateway.serve.GetStats, serve_pb2.GetStatsRequest(), timeout=10)
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED
