"""Starts the five services as separate OS processes and stops them again.

Used by `cookline up` and by the end-to-end tests, so both run the stack the
same way. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

from cookline import channels, config

# Start order: the data plane first, the gateway last.
MODULES = {
    "collect": "services.collect",
    "process": "services.process",
    "train": "services.train",
    "serve": "services.serve",
    "gateway": "gateway",
}


class Stack:
    """The services as child processes, with their logs in `log_dir` (or inherited)."""

    def __init__(self, env: Mapping[str, str] | None = None, log_dir: str | None = None):
        self.env = dict(os.environ if env is None else env)
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, service: str) -> subprocess.Popen:
        """Starts one service (again, after a stop or a crash)."""
        out = None
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            out = open(os.path.join(self.log_dir, f"{service}.log"), "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", MODULES[service]],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )
        if out:
            out.close()
        self.procs[service] = proc
        return proc

    def start_all(self) -> None:
        for service in MODULES:
            self.start(service)

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Waits until every started service's gRPC health says SERVING."""
        deadline = time.monotonic() + timeout
        for service, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{service} exited with code {proc.returncode}{self._log_hint(service)}")
            try:
                channels.wait_healthy(
                    config.address(service, self.env), timeout=max(deadline - time.monotonic(), 1), env=self.env
                )
            except TimeoutError as exc:
                raise RuntimeError(f"{exc}{self._log_hint(service)}") from None

    def _log_hint(self, service: str) -> str:
        return f" (log: {os.path.join(self.log_dir, service + '.log')})" if self.log_dir else ""

    def stop(self, service: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        proc = self.procs.get(service)
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def stop_all(self, timeout: float = 15.0) -> None:
        """SIGTERM to every service at once (they stop in parallel), SIGKILL to any still up after timeout."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def exited(self) -> dict[str, int]:
        """Services that have exited, with their exit codes."""
        return {s: p.returncode for s, p in self.procs.items() if p.poll() is not None}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop_all()
