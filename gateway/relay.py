"""The gateway's prediction relay: a second port (COOKLINE_GATEWAY_PREDICT_ADDR) whose TCP
connections are relayed byte for byte to a serve replica.

The proxy on the gateway's main port (gateway/proxy.py) runs every call through Python gRPC
twice, as a server and as a client, with a hand-off between threads each way; that costs
0.4-0.9 ms per unary call on a 2-core machine. The relay never parses HTTP/2: per connection
it opens one connection to serve and two threads move the bytes, each direction in the kernel
with os.splice through a pipe (Linux), or recv_into/sendall on one preallocated buffer
elsewhere. So:

- TLS (COOKLINE_TLS_*) is end to end between the client and serve: the bytes pass as they
  are, and the client verifies serve's certificate against the name it dialled (the
  gateway's);
- serve checks the bearer token itself (COOKLINE_AUTH_TOKEN, services.common.server);
- every gRPC method of serve is reachable, cookline's and OIP's, operator calls
  (LoadModel, UnloadModel) included;
- balancing across serve replicas is per connection: each new connection goes to the next
  address COOKLINE_SERVE_ADDR resolves to (resolved anew per connection, as
  gateway.replicas.resolve does for deploying), skipping one that refuses. A client's calls
  on one connection all reach the same replica.

When either side closes or fails, both sockets are shut down and closed, and the
connection's threads and pipes end with them.

The relay runs in a process of its own (python -m gateway.relay), started by the gateway with
the listening socket it bound: sharing the gateway's interpreter (its GIL, its gRPC server's
threads) cost it half its speed. Its stdin is a pipe from the gateway, its lifeline: when the
gateway ends, however it ends, the pipe closes and the relay exits.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping

from cookline import config
from gateway import replicas
from services.common.errors import Fail

log = logging.getLogger("cookline.gateway.relay")

# Most connections relayed at once (two threads each); one more is closed at once.
MAX_CONNECTIONS = 512
# Seconds a connection to a serve replica may take to open before the next address is tried.
CONNECT_TIMEOUT_S = 5.0
# Bytes moved per splice or recv: one pipe's default capacity.
CHUNK = 1 << 16
SPLICE = hasattr(os, "splice")


def check_upstream(target: str) -> None:
    """ValueError for a COOKLINE_SERVE_ADDR the relay cannot dial over TCP (unix:, vsock:, xds:, ...).
    Names are resolved per connection (gateway.replicas.resolve, as deploying to every replica does)."""
    if target.startswith(("dns:", "ipv4:", "ipv6:")):
        return
    host, sep, port = target.rpartition(":")
    if not sep or "/" in target or not host or not port.isdigit():
        raise ValueError(f"COOKLINE_SERVE_ADDR: the prediction relay dials TCP host:port, got {target!r}")


def listen(bind: tuple[str, int]) -> socket.socket:
    """The relay's listening socket; a taken port is SystemExit naming the setting."""
    family = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET
    try:
        return socket.create_server(bind, family=family, backlog=256)
    except OSError as exc:
        raise SystemExit(
            f"gateway: cannot listen on {bind[0]}:{bind[1]} (COOKLINE_GATEWAY_PREDICT_ADDR): {exc.strerror}"
        ) from None


class Relay:
    """Relays each connection `listener` accepts to one of `upstream`'s addresses."""

    def __init__(self, listener: socket.socket, upstream: str):
        check_upstream(upstream)
        self.upstream = upstream
        self.turn = itertools.count()
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.listener = listener

    def run(self) -> None:
        """Accepts connections until the listener is closed."""
        log.info("relaying predictions from %s:%d to serve at %s", *self.listener.getsockname()[:2], self.upstream)
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # the listener was closed
                return
            if not self.slots.acquire(blocking=False):
                log.warning("relay: %d connections already open; closing a new one", MAX_CONNECTIONS)
                client.close()
                continue
            threading.Thread(target=self._connection, args=(client,), name="relay-conn", daemon=True).start()

    def _dial(self) -> socket.socket | None:
        """A connection to the next serve address in turn, trying each once; None when none answers."""
        addresses: list[tuple] = []
        try:
            found = replicas.resolve(self.upstream)
        except Fail as exc:
            log.warning("relay: %s", exc.message)
            return None
        for replica, _ in found:
            host, port = replicas.split_host_port(replica)
            try:
                addresses += [info[4] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
            except OSError as exc:
                log.warning("relay: cannot resolve %s: %s", replica, exc)
        start = next(self.turn)
        for i in range(len(addresses)):
            address = addresses[(start + i) % len(addresses)]
            family = socket.AF_INET6 if len(address) == 4 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(CONNECT_TIMEOUT_S)
                sock.connect(address)
                sock.settimeout(None)
                return sock
            except OSError as exc:
                log.warning("relay: serve at %s refused: %s", address[:2], exc)
                sock.close()
        return None

    def _connection(self, client: socket.socket) -> None:
        try:
            upstream = self._dial()
            if upstream is None:
                return  # closing the client's connection: it sees UNAVAILABLE and may retry
            try:
                for sock in (client, upstream):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                back = threading.Thread(target=_pump, args=(upstream, client), name="relay-back", daemon=True)
                back.start()
                _pump(client, upstream)
                back.join()
            finally:
                upstream.close()
        finally:
            client.close()
            self.slots.release()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Moves src's bytes to dst until src ends or either fails; then shuts both down, which
    ends the other direction's pump too."""
    try:
        (_splice if SPLICE else _copy)(src, dst)
    except OSError:  # reset, broken pipe, or shut down by the other pump
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already shut down or never connected
                pass


def _splice(src: socket.socket, dst: socket.socket) -> None:
    """socket -> pipe -> socket in the kernel: the bytes never enter Python."""
    read_end, write_end = os.pipe()
    source, sink = src.fileno(), dst.fileno()
    try:
        while True:
            n = os.splice(source, write_end, CHUNK)
            if not n:
                return
            while n:
                n -= os.splice(read_end, sink, n)
    finally:
        os.close(read_end)
        os.close(write_end)


def _copy(src: socket.socket, dst: socket.socket) -> None:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while True:
        n = src.recv_into(buffer)
        if not n:
            return
        dst.sendall(view[:n])


def start_from_env(env: Mapping[str, str] | None = None) -> subprocess.Popen | None:
    """The relay COOKLINE_GATEWAY_PREDICT_ADDR asks for, started in its own process; None when the
    setting is unset. The caller keeps the returned process (its stdin is the relay's lifeline).
    A taken port, or an address the relay cannot use, is SystemExit naming the setting."""
    try:
        bind = config.predict_relay_bind_address(env)
        if bind is None:
            return None
        upstream = config.address("serve", env)
        check_upstream(upstream)
    except ValueError as exc:
        raise SystemExit(f"gateway: {exc}") from None
    with listen(bind) as listener:  # bound here, so a taken port stops the gateway's start-up
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.relay", str(listener.fileno()), upstream],
            stdin=subprocess.PIPE,
            pass_fds=(listener.fileno(),),
            env=None if env is None else dict(env),
        )


def _lifeline(fd: int) -> None:
    """Exits this process at once when the gateway's end of stdin closes."""
    while os.read(fd, 4096):
        pass
    os._exit(0)


def main(argv: list[str]) -> None:
    """python -m gateway.relay FD UPSTREAM: relays the connections of listening socket FD to UPSTREAM
    (a COOKLINE_SERVE_ADDR) until the gateway's end of stdin closes."""
    from services.common.server import setup_logging

    setup_logging("gateway-relay")
    threading.Thread(target=_lifeline, args=(sys.stdin.fileno(),), name="lifeline", daemon=True).start()
    Relay(socket.socket(fileno=int(argv[0])), argv[1]).run()


if __name__ == "__main__":
    main(sys.argv[1:])
