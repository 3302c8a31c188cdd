"""channels.wait_healthy against a real gRPC health server on a real port."""

import threading
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cookline import channels
from helpers import free_ports

# grpc's connectivity-polling thread used to outlive wait_healthy's channel and raise
# "Channel closed" after it: any exception in a thread fails these tests.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


class FlippingHealth(health.HealthServicer):
    """A health servicer that reports the "iris" service SERVING from its 3rd Check on."""

    def __init__(self):
        super().__init__()
        self.checks = 0
        self.set("iris", health_pb2.HealthCheckResponse.NOT_SERVING)

    def Check(self, request, context):
        self.checks += 1
        if self.checks == 3:
            self.set("iris", health_pb2.HealthCheckResponse.SERVING)
        return super().Check(request, context)


@pytest.fixture
def health_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = FlippingHealth()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def test_polls_until_the_named_service_reports_serving(health_server):
    servicer, target = health_server
    channels.wait_healthy(target, timeout=60, service="iris", env={})
    assert servicer.checks == 3  # answered NOT_SERVING twice, then SERVING


def test_a_service_still_not_serving_times_out_naming_the_target(health_server):
    servicer, target = health_server
    servicer.set("other", health_pb2.HealthCheckResponse.NOT_SERVING)
    with pytest.raises(TimeoutError, match=target):
        channels.wait_healthy(target, timeout=1, service="other", env={})
    assert servicer.checks >= 1


def test_nothing_listening_times_out_naming_the_target():
    (port,) = free_ports(1, set())
    target = f"127.0.0.1:{port}"
    with pytest.raises(TimeoutError, match=target):
        channels.wait_healthy(target, timeout=1, env={})


def test_waits_for_a_server_that_starts_later():
    (port,) = free_ports(1, set())
    target = f"127.0.0.1:{port}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port(target)
    starter = threading.Timer(0.5, server.start)  # the server appears while wait_healthy is waiting
    starter.start()
    try:
        channels.wait_healthy(target, timeout=60, env={})
    finally:
        starter.join()
        server.stop(None)
