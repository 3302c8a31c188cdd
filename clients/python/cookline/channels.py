"""gRPC channels to cookline services, all made the same way."""
from __future__ import annotations

import time
from typing import Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cookline import config


def channel(service: str, env: Mapping[str, str] | None = None, target: str | None = None) -> grpc.Channel:
    """An insecure channel to `service` at its configured address (or `target`)."""
    return grpc.insecure_channel(target or config.address(service, env), options=config.client_options(env))


def wait_healthy(target: str, timeout: float = 60.0, service: str = "") -> None:
    """Blocks until the gRPC health service at `target` answers SERVING.

    Raises TimeoutError naming the target when it does not within `timeout` s.
    """
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{target} did not report SERVING within {timeout:.0f} s")
            try:
                grpc.channel_ready_future(ch).result(timeout=remaining)
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=min(remaining, 5))
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except (grpc.FutureTimeoutError, grpc.RpcError):
                pass
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))  # poll interval between health checks
