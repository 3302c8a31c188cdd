"""Data-plane throughput: the same 256x784 float32 batches streamed three ways in one run.

1. collect -> process -> consumer (the cookline data plane, real processes, local store);
2. a raw one-hop gRPC stream of bytes messages of the same size (server in another process);
3. tf.data service, dispatcher + worker in another process.

Prints MB/s of each and the ratios (targets: >= 1.0x tf.data service, >= 0.55x raw gRPC), best of
--repeat rounds, each round measuring every path once. The first cookline measurement reads every
shard for the first time (each one hashed against its sha256); the repeats read the same files
again, as a second epoch does (verified once per file: services/common/store.py,
LocalStore.get_buffer): both are printed.

It also prints the CPU seconds each process of the cookline and raw paths spent per GB streamed
(median of the runs after the first, Linux /proc): on a machine shared with other work the MB/s
follow the CPU the streams get, while the CPU cost per GB moves much less.

    .venv/bin/python bench/data_plane.py [--mb 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import statistics
import time

import grpc
from common import ROWS, WIDTH, batch, cpu_seconds, data_plane, free_ports, scratch, upload

from cookline import channels, config, tensors
from cookline.v1 import process_pb2

MB = 1e6


def cookline_stream(env, ref) -> int:
    """Bytes of features+label received through process (no ops), batch 256, decoded to numpy.

    The consumer reads the messages as bytes and views the arrays in them (tensors.decode_batch),
    as train does: no copy after gRPC's own.
    """
    call = channels.channel("process", env).unary_stream(
        "/cookline.v1.ProcessService/Process",
        request_serializer=process_pb2.ProcessRequest.SerializeToString,
        response_deserializer=None,
    )
    received = 0
    for message in call(process_pb2.ProcessRequest(dataset=ref, batch_size=ROWS), timeout=3600):
        arrays, _ = tensors.decode_batch(message)
        received += arrays["features"].nbytes + arrays["label"].nbytes
    return received


# --- raw one-hop gRPC ----------------------------------------------------------------


def _raw_server(port: int, count: int, ready) -> None:
    """Streams `count` messages of one batch's bytes, cycling through 64 distinct ones (50 MB,
    more than the CPU caches hold), so the baseline, like the data plane, moves fresh memory."""
    from concurrent import futures

    pool = [batch(i)["features"].tobytes() + batch(i)["label"].tobytes() for i in range(64)]

    def stream(request, context):
        for i in range(count):
            yield pool[i % len(pool)]

    handler = grpc.method_handlers_generic_handler(
        "bench.Raw",
        {
            "Stream": grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=lambda b: b, response_serializer=lambda b: b
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(4), options=config.grpc_options())
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    ready.set()
    server.wait_for_termination()


def raw_stream(count: int, cpu: dict | None = None) -> tuple[int, float]:
    """(bytes, seconds) of one raw stream; `cpu`: gets each side's CPU seconds of the stream."""
    port = free_ports(1)[0]
    ready = mp.get_context("spawn").Event()
    proc = mp.get_context("spawn").Process(target=_raw_server, args=(port, count, ready), daemon=True)
    proc.start()
    ready.wait(60)
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=config.grpc_options()) as ch:
        call = ch.unary_stream("/bench.Raw/Stream", request_serializer=lambda b: b, response_deserializer=lambda b: b)
        before = {"server": cpu_seconds(proc.pid), "client": cpu_seconds()}
        start = time.perf_counter()
        received = sum(len(m) for m in call(b"", timeout=3600))
        elapsed = time.perf_counter() - start
        if cpu is not None:
            cpu.update(server=cpu_seconds(proc.pid) - before["server"], client=cpu_seconds() - before["client"])
    proc.terminate()
    proc.join()
    return received, elapsed


# --- tf.data service ---------------------------------------------------------------


def _tf_worker(dispatcher: str, port: int, ready) -> None:
    import tensorflow as tf

    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(
            dispatcher_address=dispatcher, worker_address=f"localhost:{port}", port=port
        )
    )
    ready.set()
    worker.join()


def tf_data_service(count: int) -> tuple[int, float]:
    import tensorflow as tf

    d_port, w_port = free_ports(2)
    dispatcher = tf.data.experimental.service.DispatchServer(tf.data.experimental.service.DispatcherConfig(port=d_port))
    address = dispatcher.target.split("://")[1]
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    worker = ctx.Process(target=_tf_worker, args=(address, w_port, ready), daemon=True)
    worker.start()
    ready.wait(120)
    one = batch(0)
    ds = tf.data.Dataset.from_tensors((one["features"], one["label"])).repeat(count)
    ds = ds.apply(tf.data.experimental.service.distribute(processing_mode="parallel_epochs", service=dispatcher.target))
    received = 0
    start = None
    for features, label in ds:
        if start is None:  # the first element includes the job start-up; count from it
            start = time.perf_counter()
            continue
        received += features.numpy().nbytes + label.numpy().nbytes
    elapsed = time.perf_counter() - start
    worker.terminate()
    worker.join()
    return received, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=512, help="data streamed per measurement, in MB")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each; the best is reported")
    args = parser.parse_args()
    count = max(1, int(args.mb * MB) // (ROWS * WIDTH * 4))

    store = scratch("cookline-bench-dp-")
    stack, env = data_plane(store)
    try:
        ref = upload(env, "bench", count * ROWS * WIDTH * 4).dataset.ref
        pids = {service: proc.pid for service, proc in stack.procs.items()}
        paths = {
            "cookline collect->process->consumer": lambda used: _timed(cookline_stream, pids, used, env, ref),
            "raw one-hop gRPC bytes stream": lambda used: raw_stream(count, used),
            "tf.data service (worker in another process)": lambda used: tf_data_service(count),
        }
        runs: dict[str, list[float]] = {name: [] for name in paths}
        used_per_gb: dict[str, list[dict]] = {name: [] for name in paths}
        # Round by round (each path once per round), so a change in the machine's load between
        # the measurements falls on every path alike rather than on one.
        for _ in range(args.repeat):
            for name, fn in paths.items():
                used: dict[str, float] = {}
                received, elapsed = fn(used)
                runs[name].append(received / elapsed / MB)
                used_per_gb[name].append({k: v / (received / 1e9) for k, v in used.items()})
        results = {name: max(r) for name, r in runs.items()}
        first = {name: r[0] for name, r in runs.items()}
        cpu = {}
        for name, per_run in used_per_gb.items():
            repeats = per_run[1:] or per_run  # after the first: cookline's shards already verified
            if repeats[0]:
                cpu[name] = {k: statistics.median(u[k] for u in repeats) for k in repeats[0]}
    finally:
        stack.stop_all()
        shutil.rmtree(store, ignore_errors=True)

    print(
        f"data plane: {count} batches of {ROWS}x{WIDTH} float32 (+ int32 labels), "
        f"{count * ROWS * (WIDTH + 1) * 4 / MB:.0f} MB per run, best of {args.repeat}"
    )
    for name, mbs in results.items():
        print(f"  {name:48s} {mbs:8.0f} MB/s")
    ours = results["cookline collect->process->consumer"]
    print(
        f"  ratio vs tf.data service: {ours / results['tf.data service (worker in another process)']:.2f}x "
        f"(target >= 1.0x)"
    )
    raw = results["raw one-hop gRPC bytes stream"]
    print(f"  ratio vs raw gRPC:        {ours / raw:.2f}x (target >= 0.55x)")
    print(
        f"  first cookline run (every shard hashed): {first['cookline collect->process->consumer']:.0f} MB/s, "
        f"{first['cookline collect->process->consumer'] / raw:.2f}x raw (info)"
    )
    print("  CPU seconds per GB streamed (median of the runs after the first; info):")
    for name, used in cpu.items():
        parts = ", ".join(f"{k} {v:.2f}" for k, v in used.items())
        print(f"    {name:46s} {sum(used.values()):5.2f}  ({parts})")


def _timed(fn, pids: dict[str, int], used: dict, *args):
    """Runs fn(*args) -> bytes; (bytes, seconds), and `used` gets each process's CPU seconds of the run
    (the services in `pids`, and this process as the consumer)."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()} | {"consumer": cpu_seconds()}
    start = time.perf_counter()
    received = fn(*args)
    elapsed = time.perf_counter() - start
    after = {name: cpu_seconds(pid) for name, pid in pids.items()} | {"consumer": cpu_seconds()}
    used.update({name: after[name] - before[name] for name in before})
    return received, elapsed


if __name__ == "__main__":
    main()
