"""A client that keeps predicting through cookline's Python client (its channel: round_robin over
every address the target resolves to, the documented retry policy), for the replica tests.

    python -c "$(cat replica_client.py)" TARGET MODEL MAX_SECONDS

It prints `ready` once a prediction was answered, then predicts until a line `stop` arrives on
stdin or MAX_SECONDS pass; a line `mark` prints the number of answered calls so far. At the end it
prints one JSON line: sent, answered, failed (with the failures' codes), and the addresses
TARGET's host resolved to. Runs where only serve is reachable (inside a container on the compose
stack's network, tests/e2e/test_compose_replicas.py); needs the cookline package only.
"""

from __future__ import annotations

import json
import queue
import socket
import sys
import threading
import time

import grpc

from cookline.client import Client

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [7.7, 3.0, 6.1, 2.3]]  # one iris row of each class


def main(target: str, model: str, max_seconds: float) -> None:
    commands: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [commands.put(line.strip()) for line in sys.stdin], daemon=True).start()
    counts = {"sent": 0, "answered": 0, "failed": 0}
    failures: dict[str, int] = {}
    labels: set[str] = set()
    deadline = time.monotonic() + max_seconds
    with Client(serve=target) as client:
        while time.monotonic() < deadline:
            try:
                command = commands.get_nowait()
            except queue.Empty:
                command = None
            if command == "stop":
                break
            if command == "mark":
                print(counts["answered"], flush=True)
            counts["sent"] += 1
            try:
                labels.update(row["label"] for row in client.predict(model, ROWS))
            except grpc.RpcError as exc:
                counts["failed"] += 1
                failures[exc.code().name] = failures.get(exc.code().name, 0) + 1
                continue
            counts["answered"] += 1
            if counts["answered"] == 1:
                print("ready", flush=True)
    host, _, port = target.removeprefix("dns:///").rpartition(":")
    addresses = sorted({info[4][0] for info in socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)})
    print(json.dumps({**counts, "failures": failures, "labels": sorted(labels), "addresses": addresses}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
