"""A service started while the object store is down waits for it (COOKLINE_STORE_WAIT_S),
as under docker compose or Kubernetes where nothing orders the start-up."""

import os
import subprocess

from cookline import channels
from cookline.stack import Stack
from helpers import free_ports
from s3server import SeaweedS3


def proc_wait(proc, seconds):
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        pass


def test_collect_starts_serving_once_a_late_object_store_comes_up(tmp_path):
    with SeaweedS3() as s3:
        s3._terminate()  # down, keeping its ports and data dir so it comes back at the same address
        (port,) = free_ports(1, set(s3.ports.values()))
        env = dict(
            os.environ, COOKLINE_COLLECT_ADDR=f"127.0.0.1:{port}", COOKLINE_STORE_WAIT_S="300", **s3.env("late-store")
        )
        with Stack(env, log_dir=str(tmp_path)) as stack:
            proc = stack.start("collect")
            log = tmp_path / "collect.log"
            while "waiting for it (COOKLINE_STORE_WAIT_S)" not in (log.read_text() if log.exists() else ""):
                assert proc.poll() is None, f"collect exited while the store was down:\n{log.read_text()}"
                proc_wait(proc, 0.2)  # poll interval for the log line; also notices an early exit
            s3.restart()
            channels.wait_healthy(f"127.0.0.1:{port}", timeout=300)
            assert stack.exited() == {}
            assert "late-store" in {b.name for b in s3.client().list_buckets()}
