"""Resources running out: a full disk under the local store, an S3 identity whose Write permission is
revoked mid-run. Each ends the run FAILED with a message naming the cause, leaves nothing half-written
visible, and the services stay up and run the next pipeline to success.

The full disk is real: the stack (`cookline up`) runs in a user and mount namespace of its own
(`unshare -Urm`, no root needed) whose store folder is a tmpfs of FULL_DISK_MB, so writes past it fail
with ENOSPC as on a full disk. This module has its own SeaweedFS server, where a second identity (kept in
the filer, so its actions can change while the server runs) is the one the services use."""

import json
import os
import shutil
import signal
import subprocess
import sys

import grpc
import pytest

from cookline import channels, config
from cookline.client import Client
from cookline.v1 import gateway_pb2
from error_catalogue import FAULT_CASES
from helpers import SERVICES, free_ports, iris_pipeline, unique_bucket, write_big_csv
from s3server import SeaweedS3
from services.common.store import S3Store, StoreDeniedError, store_from_env

FULL_DISK, DENIED = FAULT_CASES[0], FAULT_CASES[1]  # their rows of docs/errors.md
FULL_DISK_MB = 12
BIG_ROWS = 1_000_000  # about 20 MB of shards: more than the full disk holds, many shards on S3
WRITER = "cookline-writer"  # the identity the services of this module's stack use
BUCKET = unique_bucket("denied")
_KEYS: dict[str, str] = {}


def _big_pipeline(name: str, source) -> str:
    return f"name: {name}\ncollect: {{source: {source}, label: label}}\ntrain: {{model: mlp, epochs: 1}}\n"


def _dataset_missing(client: Client, name: str) -> bool:
    try:
        client.get_dataset(name)
    except grpc.RpcError as exc:
        return exc.code() == grpc.StatusCode.NOT_FOUND
    return False


# --- a full disk under the local store -----------------------------------------------------------


def test_full_disk_fails_the_run_and_the_stack_serves_on(tmp_path):
    store_dir, logs = tmp_path / "store", tmp_path / "logs"
    store_dir.mkdir()
    ports = free_ports(7)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIO_")}
    env.update({f"COOKLINE_{s.upper()}_ADDR": f"127.0.0.1:{p}" for s, p in zip(SERVICES, ports[:5], strict=True)})
    env.update(
        COOKLINE_SERVE_HTTP_ADDR=f"127.0.0.1:{ports[5]}",
        COOKLINE_GATEWAY_HTTP_ADDR=f"127.0.0.1:{ports[6]}",
        COOKLINE_DATA_DIR=str(store_dir),
        COOKLINE_SHARD_MB="1",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    big = tmp_path / "big.csv"
    write_big_csv(big, BIG_ROWS)
    cookline = os.path.join(os.path.dirname(sys.executable), "cookline")
    up = subprocess.Popen(
        [
            "unshare",
            "-Urm",
            "sh",
            "-c",
            f'mount -t tmpfs -o size={FULL_DISK_MB}m cookline-full "$0" && exec "$1" up --log-dir "$2"',
            str(store_dir),
            cookline,
            str(logs),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # the store as the services see it, from outside their mount namespace
    seen = f"/proc/{up.pid}/root{store_dir}/cookline"
    try:
        for service in SERVICES:
            channels.wait_healthy(config.address(service, env), timeout=300, env=env)
        with Client(env=env) as client:
            run, _ = client.run_and_wait(_big_pipeline("full", big))
            assert run.state == gateway_pb2.RUN_STATE_FAILED
            assert run.stage == gateway_pb2.STAGE_COLLECT
            assert f"collect failed: {FULL_DISK.code.name}: {FULL_DISK.message}" in run.reason, run.reason
            assert "no space left on the local store's disk (ENOSPC" in run.reason
            # nothing half-written: no dataset, and none of its shards left on the disk
            assert _dataset_missing(client, "full")
            assert not os.path.exists(f"{seen}/datasets/full")
            # the services are up and the next run succeeds on the same disk
            run, _ = client.run_and_wait(iris_pipeline("afterfull", train="{model: mlp, epochs: 3}"))
            assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
            assert os.path.exists(f"{seen}/models/afterfull/{run.model.version}/cookline.json")
        assert up.poll() is None, up.stderr.read().decode() if up.stderr else ""
    finally:
        up.send_signal(signal.SIGTERM)  # `cookline up` stops the services, then the namespace goes
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
    if os.path.isdir(logs):
        shutil.rmtree(logs)


# --- an S3 bucket that refuses writes --------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server():
    """A SeaweedFS server of this module only, with the WRITER identity and its bucket."""
    with SeaweedS3() as server:
        _KEYS.update(server.add_identity(WRITER, ("Read", "Write", "List")))
        server.client().make_bucket(BUCKET)  # WRITER is no admin: it cannot create buckets
        yield server


def STACK_ENV(_tmp_path_factory):  # noqa: N802 - the name conftest's `stack` fixture looks for
    return dict(_KEYS, COOKLINE_BUCKET=BUCKET, COOKLINE_SHARD_MB="0.25")


def _wait_until_writes(s3_server, allowed: bool) -> None:
    """Waits (bounded) until the S3 gateway applies the WRITER's new actions: a probe put as WRITER
    succeeds (allowed) or is denied."""
    probe = S3Store(s3_server.endpoint, _KEYS["MINIO_ACCESS_KEY"], _KEYS["MINIO_SECRET_KEY"], BUCKET)
    for _ in range(300):
        try:
            probe.put_bytes("probe/write", b"1")
            if allowed:
                probe.delete("probe/write")
                return
        except StoreDeniedError:
            if not allowed:
                return
        s3_server.proc_wait(0.2)  # poll interval while the change propagates
    raise AssertionError(f"the S3 gateway did not apply Write={'allowed' if allowed else 'revoked'}")


def test_s3_write_revoked_mid_run_fails_the_run_and_the_stack_serves_on(stack, s3_server, tmp_path):
    services, env = stack
    big = tmp_path / "big.csv"
    write_big_csv(big, BIG_ROWS)
    with Client(env=env) as client:
        run = client.submit(_big_pipeline("denied", big))
        revoked = False
        for event in client.watch(run.run_id):
            if not revoked and event.WhichOneof("event") == "ingest":
                s3_server.set_actions(WRITER, ("Write",), allowed=False)
                _wait_until_writes(s3_server, allowed=False)
                revoked = True
        final = client.get_run(run.run_id)
        assert revoked
        assert final.state == gateway_pb2.RUN_STATE_FAILED
        assert f"collect failed: {DENIED.code.name}: {DENIED.message}" in final.reason, final.reason
        assert "AccessDenied" in final.reason and "Write" in final.reason  # says which permission to look at
        # nothing half-written is visible: no dataset version (the shards left behind have no manifest)
        assert _dataset_missing(client, "denied")

        s3_server.set_actions(WRITER, ("Write",), allowed=True)
        _wait_until_writes(s3_server, allowed=True)
        # the gateway kept the run in memory while the store refused its record, and writes it now
        store = store_from_env(env)
        for _ in range(300):
            if json.loads(store.get_bytes(f"runs/{run.run_id}/run.json"))["state"] == "RUN_STATE_FAILED":
                break
            s3_server.proc_wait(0.2)  # poll interval: the gateway retries every 2 s
        else:
            raise AssertionError("the failed run's record never reached the store")
        after, _ = client.run_and_wait(iris_pipeline("afterdenied", train="{model: mlp, epochs: 3}"))
        assert after.state == gateway_pb2.RUN_STATE_SUCCEEDED, after.reason
    assert services.exited() == {}
