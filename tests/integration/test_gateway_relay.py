"""The gateway's prediction relay (COOKLINE_GATEWAY_PREDICT_ADDR, gateway/relay.py), on real processes:
serve and the gateway on one S3 store (SeaweedFS), with a bearer token.

- a Predict, a PredictStream and GetModelMetadata through the relay answer as serve does directly;
- serve checks the token itself: a call through the relay without it is UNAUTHENTICATED;
- a client that closes, cancels or resets its connection, and a serve that dies, leave the relay
  (the gateway's child process) with no relayed socket, and as many fds and threads as before
  (/proc/<pid>/fd and task);
  with serve down a new connection is closed at once (UNAVAILABLE), and once serve is back the same
  client answers again;
- the relay ends with the gateway, even a SIGKILLed one;
- a taken port, or a serve address the relay cannot dial, is a start-up error naming the setting."""

import os
import signal
import socket
import struct
import threading
import time

import grpc
import numpy as np
import pytest

import raw_models as rm
from cookline import channels, tensors
from cookline.client import Client
from cookline.v1 import model_pb2, serve_pb2, serve_pb2_grpc
from gateway import relay
from helpers import child_processes, free_ports, stack_env, unique_bucket
from services.common.store import store_from_env

ROWS = {"features": [[1.0, 2.0, 0.5], [0.0, -1.0, -3.0]]}
MODEL = "relayed"
TOKEN = "relay-test-token"


@pytest.fixture(scope="module")
def relayed(s3_server, tmp_path_factory):
    """serve and the gateway with the relay on; yields (Stack, env, the relay's address)."""
    from cookline.stack import Stack

    env = stack_env(os.environ, s3_server.env(unique_bucket("relay")), s3_server.ports.values())
    used = {int(v.rsplit(":", 1)[1]) for k, v in env.items() if k.endswith("_ADDR") and k.startswith("COOKLINE_")}
    (port,) = free_ports(1, used | set(s3_server.ports.values()))
    env["COOKLINE_GATEWAY_PREDICT_ADDR"] = f"127.0.0.1:{port}"
    env["COOKLINE_AUTH_TOKEN"] = TOKEN
    rm.publish_mixed(store_from_env(env), MODEL, inputs=("features",))
    stack = Stack(env, log_dir=str(tmp_path_factory.mktemp("relay-logs")))
    with stack:
        stack.start("serve")
        stack.start("gateway")
        stack.wait_healthy(timeout=180)
        with Client(env=env) as direct:
            direct.serve.LoadModel(serve_pb2.LoadModelRequest(model=model_pb2.ModelRef(name=MODEL)), timeout=180)
        yield stack, env, env["COOKLINE_GATEWAY_PREDICT_ADDR"]


def _inodes(pid: int) -> set[str]:
    """Inodes of the sockets process `pid` holds open."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed while listed
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def _relayed_sockets(pid: int, env) -> int:
    """The relay's TCP connections: accepted on the relay port, or opened to serve."""
    relay_port = int(env["COOKLINE_GATEWAY_PREDICT_ADDR"].rsplit(":", 1)[1])
    serve_port = int(env["COOKLINE_SERVE_ADDR"].rsplit(":", 1)[1])
    mine, count = _inodes(pid), 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if inode not in mine or state == "0A":  # 0A: LISTEN, the relay's own listener
                continue
            if int(local.split(":")[1], 16) == relay_port or int(remote.split(":")[1], 16) == serve_port:
                count += 1
    return count


def _counts(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


def _settled(pid: int, env, baseline: tuple[int, int], timeout: float = 30.0) -> tuple[int, int, int]:
    """Waits until the relay holds no relayed connection and its fd and thread counts are back to
    `baseline` (closing is asynchronous); returns (relayed sockets, fds, threads) as last seen."""
    deadline = time.monotonic() + timeout
    while True:
        seen = (_relayed_sockets(pid, env), *_counts(pid))
        if seen == (0, *baseline) or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)  # poll interval


def _relay_pid(stack) -> int:
    (pid,) = child_processes(stack.procs["gateway"].pid, "gateway.relay")
    return pid


@pytest.fixture
def baseline(relayed):
    """The relay process's pid and its (fds, threads) with no relayed connection open."""
    stack, env, _ = relayed
    pid = _relay_pid(stack)
    deadline = time.monotonic() + 30
    while _relayed_sockets(pid, env) and time.monotonic() < deadline:
        time.sleep(0.05)  # poll interval: an earlier test's connections closing
    assert _relayed_sockets(pid, env) == 0
    return pid, _counts(pid)


def test_predict_stream_and_metadata_through_the_relay_answer_as_serve_does(relayed):
    _, env, address = relayed
    with Client(env=env, serve=address) as via_relay, Client(env=env) as direct:
        assert via_relay.predict(MODEL, ROWS) == direct.predict(MODEL, ROWS)
        assert [r["label"] for r in via_relay.predict(MODEL, ROWS)] == ["pos", "neg"]
        relayed_rows = list(via_relay.predict_stream(MODEL, ROWS))
        assert relayed_rows == list(direct.predict_stream(MODEL, ROWS))
        assert [row["label"] for _, row, _ in relayed_rows] == ["pos", "neg"]
        assert via_relay.model_metadata(MODEL) == direct.model_metadata(MODEL)


def test_serve_checks_the_token_itself_behind_the_relay(relayed):
    _, _, address = relayed
    with grpc.insecure_channel(address) as bare:  # no token
        with pytest.raises(grpc.RpcError) as caught:
            serve_pb2_grpc.ServeServiceStub(bare).Predict(
                serve_pb2.PredictRequest(model=model_pb2.ModelRef(name=MODEL)), timeout=30
            )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_client_going_away_leaves_no_connection_fd_or_thread(relayed, baseline):
    _, env, address = relayed
    pid, before = baseline
    # closed after calls
    with Client(env=env, serve=address) as client:
        client.predict(MODEL, ROWS)
        assert _relayed_sockets(pid, env) == 2  # the client's connection and its twin to serve
    assert _settled(pid, env, before) == (0, *before)
    # a stream cancelled midway, its channel closed
    gate = threading.Event()

    def messages():
        request = serve_pb2.PredictRequest(model=model_pb2.ModelRef(name=MODEL))
        tensors.from_numpy(np.array(ROWS["features"], np.float32), out=request.inputs["features"])
        yield serve_pb2.PredictStreamRequest(request=request)
        gate.wait(30)

    with channels.channel("serve", env, target=address) as channel:
        call = serve_pb2_grpc.ServeServiceStub(channel).PredictStream(messages(), timeout=60)
        first = next(call)
        assert not first.HasField("error")
        call.cancel()
        gate.set()
    assert _settled(pid, env, before) == (0, *before)
    # a reset connection (RST, no FIN) in the middle of the HTTP/2 preface
    host, port = address.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)))
    raw.sendall(b"PRI * HTTP/2.0\r\n")
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
    assert _settled(pid, env, before) == (0, *before)


def test_serve_going_away_closes_relayed_connections_and_they_come_back(relayed, baseline):
    stack, env, address = relayed
    pid, before = baseline
    with Client(env=env, serve=address) as client:
        assert [r["label"] for r in client.predict(MODEL, ROWS)] == ["pos", "neg"]
        stack.stop("serve", signal.SIGKILL)
        assert _settled(pid, env, before) == (0, *before)
        with pytest.raises(grpc.RpcError) as caught:  # nothing to relay to: closed at once, each retry too
            client.predict(MODEL, ROWS)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _settled(pid, env, before) == (0, *before)
        stack.start("serve")
        stack.wait_healthy(timeout=180)
        channels.wait_healthy(env["COOKLINE_SERVE_ADDR"], timeout=180, service=MODEL, env=env)
        assert [r["label"] for r in client.predict(MODEL, ROWS)] == ["pos", "neg"]  # the same client, reconnected
    assert _settled(pid, env, before) == (0, *before)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"  # a zombie has exited (init reaps it)
    except FileNotFoundError:
        return False


def test_the_relay_ends_with_the_gateway(relayed):
    stack, env, address = relayed
    pid = _relay_pid(stack)
    stack.stop("gateway", signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # poll interval
    assert not _running(pid)
    host, port = address.rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):  # the port is free: nobody listens
        socket.create_connection((host, int(port)), timeout=10).close()


def test_a_taken_port_is_a_clear_start_up_error():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {"COOKLINE_GATEWAY_PREDICT_ADDR": f"127.0.0.1:{port}", "COOKLINE_SERVE_ADDR": "127.0.0.1:50054"}
        with pytest.raises(SystemExit, match=f"cannot listen on 127.0.0.1:{port} \\(COOKLINE_GATEWAY_PREDICT_ADDR\\)"):
            relay.start_from_env(env)


def test_addresses_the_relay_cannot_use_are_start_up_errors():
    assert relay.start_from_env({}) is None  # unset: no relay
    (port,) = free_ports(1)
    env = {"COOKLINE_GATEWAY_PREDICT_ADDR": f"127.0.0.1:{port}", "COOKLINE_SERVE_ADDR": "unix:/tmp/serve.sock"}
    with pytest.raises(SystemExit, match="COOKLINE_SERVE_ADDR: the prediction relay dials TCP host:port"):
        relay.start_from_env(env)
    with pytest.raises(SystemExit, match="COOKLINE_GATEWAY_PREDICT_ADDR must be host:port, got '8081'"):
        relay.start_from_env({"COOKLINE_GATEWAY_PREDICT_ADDR": "8081"})
    relay.check_upstream("dns:///serve:50054")
    relay.check_upstream("ipv4:10.0.0.1:50054,10.0.0.2:50054")
    relay.check_upstream("[::1]:50054")
