"""How the gateway finds every serve replica behind COOKLINE_SERVE_ADDR (gateway/replicas.py
resolve), for DeployModel / UndeployModel. Several replicas behind one DNS name are covered with
real containers in tests/e2e/test_compose_replicas.py, two processes in
tests/integration/test_serve_replicas.py."""

import grpc
import pytest

from gateway.replicas import resolve
from services.common.errors import Fail


@pytest.mark.parametrize(
    "target, replicas",
    [
        ("ipv4:10.0.0.2:50054,10.0.0.1:50054", [("10.0.0.1:50054", ""), ("10.0.0.2:50054", "")]),
        ("ipv6:[::2]:50054,[::1]:50054", [("[::1]:50054", ""), ("[::2]:50054", "")]),
        ("127.0.0.1:50054", [("127.0.0.1:50054", "")]),
        ("[::1]:50054", [("[::1]:50054", "")]),
        # a name of this machine only: one serve process (two cannot share the port)
        ("localhost:50054", [("localhost:50054", "")]),
        ("dns:///localhost:50054", [("dns:///localhost:50054", "")]),
        ("unix:/run/serve.sock", [("unix:/run/serve.sock", "")]),
    ],
)
def test_every_replica_a_target_names(target, replicas):
    assert resolve(target) == replicas


def test_a_name_that_does_not_resolve_is_unavailable_naming_the_setting():
    with pytest.raises(Fail) as failed:
        resolve("no-such-host.invalid:50054")
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    assert "COOKLINE_SERVE_ADDR: cannot resolve 'no-such-host.invalid'" in failed.value.message
