"""What the tests of every kind share: the checkout's paths, free ports, bucket names, pipeline
text, test data and certificates, and watching a run while a service is killed.

tests/conftest.py puts tests/support on sys.path, so `from helpers import ROOT` works from
tests/unit, tests/integration and tests/e2e alike. Standard library and NumPy only: no server starts here.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping

import numpy as np

SUPPORT = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(SUPPORT))  # the checkout
EXAMPLES = os.path.join(ROOT, "examples")
IRIS_YAML = os.path.join(EXAMPLES, "iris.yaml")
IRIS_CSV = os.path.join(EXAMPLES, "data", "iris.csv")
TEXT_CSV = os.path.join(EXAMPLES, "data", "text.csv")
IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def free_ports(n: int, exclude=()) -> list[int]:
    """n distinct free ports, bound all at once so the kernel cannot hand out duplicates."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            port = s.getsockname()[1]
            if port not in exclude and port not in ports:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def train_peer_ports(n: int, exclude=()) -> list[int]:
    """n free ports for train replicas, each with its collective port (port + 1000) free too."""
    from services.train.distributed import COLLECTIVE_OFFSET

    ports: list[int] = []
    while len(ports) < n:
        for port in free_ports(n, set(exclude) | set(ports)):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port + COLLECTIVE_OFFSET))
                except OSError:
                    continue
            if len(ports) < n and port + COLLECTIVE_OFFSET <= 65535:
                ports.append(port)
    return ports


SERVICES = ("gateway", "collect", "process", "train", "serve")


def stack_env(base: Mapping[str, str], s3_env: Mapping[str, str], exclude=()) -> dict[str, str]:
    """Settings for the five services on free ports (gRPC, and HTTP for serve and the gateway), on top of
    `base` (os.environ) and an S3 server's settings (SeaweedS3.env): what `cookline.stack.Stack` takes."""
    ports = free_ports(7, set(exclude))
    env = dict(base)
    env.update(s3_env)
    for service, port in zip(SERVICES, ports[:5], strict=True):
        env[f"COOKLINE_{service.upper()}_ADDR"] = f"127.0.0.1:{port}"
    for service, port in zip(("serve", "gateway"), ports[5:], strict=True):  # the HTTP front doors
        env[f"COOKLINE_{service.upper()}_HTTP_ADDR"] = f"127.0.0.1:{port}"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MB (from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def unique_bucket(stem: str = "t") -> str:
    """A fresh valid S3 bucket name (lowercase, 3-63 chars)."""
    return f"{stem}-{uuid.uuid4().hex[:16]}"


def iris_pipeline(
    name: str,
    train: str = "{model: mlp}",
    process: str | None = "[{standardize: {}}]",
    split: str | None = None,
    evaluate: str | None = None,
    source: str = IRIS_CSV,
    label: str = "species",
) -> str:
    """A pipeline file's text on examples/data/iris.csv (or `source`); each section is YAML flow text,
    and a section that is None is left out."""
    text = f"name: {name}\ncollect: {{source: {source}, label: {label}}}\n"
    for key, value in (("process", process), ("split", split), ("train", train), ("evaluate", evaluate)):
        if value is not None:
            text += f"{key}: {value}\n"
    return text


def iris_rows() -> tuple[list[list[float]], list[str]]:
    """examples/data/iris.csv as (feature rows in IRIS_FEATURES order, species labels)."""
    with open(IRIS_CSV) as f:
        rows = list(csv.DictReader(f))
    return [[float(r[c]) for c in IRIS_FEATURES] for r in rows], [r["species"] for r in rows]


BIG_CSV_ROWS = 400_000  # spans many shards at COOKLINE_SHARD_MB=1, so a kill mid-ingest lands between them


def write_big_csv(path, rows: int = BIG_CSV_ROWS) -> None:
    """A seeded CSV of `rows` rows: four numeric columns a..d and a label "hi"/"lo" (a + b > 0)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(rows, 4)).round(4)
    labels = np.where(x[:, 0] + x[:, 1] > 0, "hi", "lo")
    with open(path, "w") as f:
        f.write("a,b,c,d,label\n")
        for start in range(0, rows, 50_000):
            f.writelines(
                f"{r[0]},{r[1]},{r[2]},{r[3]},{label}\n"
                for r, label in zip(x[start : start + 50_000], labels[start : start + 50_000], strict=True)
            )


def make_certificates(folder: str) -> dict[str, str]:
    """A CA, and a server certificate it signs for localhost and 127.0.0.1 (EC P-256, 1 day), made by
    openssl in `folder`; returns the COOKLINE_TLS_* settings naming them."""

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=cookline test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    )
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    with open(os.path.join(folder, "san.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "san.cnf",
    )
    return {
        "COOKLINE_TLS_CERT": os.path.join(folder, "server.pem"),
        "COOKLINE_TLS_KEY": os.path.join(folder, "server.key"),
        "COOKLINE_TLS_CA": os.path.join(folder, "ca.pem"),
    }


def watch_and_kill_mid_ingest(client, run_id: str, kill: Callable[[], None], shards: int = 2) -> tuple[list, object]:
    """Watches a run to its end; once its ingest has written `shards` shards, calls kill() once (it stops a
    service and starts it again). Returns every event and the ingest progress at the kill (None if it never ran)."""
    events, killed_at = [], None
    for event in client.watch(run_id):
        events.append(event)
        if killed_at is None and event.WhichOneof("event") == "ingest" and event.ingest.shards_written >= shards:
            kill()
            killed_at = event.ingest
    return events, killed_at


def watch_and_kill_after_checkpoint(
    client, run_id: str, store, kill: Callable[[], None], epoch: int = 3, mid_epoch: bool = False
) -> tuple[list, tuple[int, int] | None]:
    """Watches a run to its end; once a finished epoch finds the run's checkpoint at `epoch` or later,
    calls kill() once (it stops a service and starts it again, as a supervisor would). With `mid_epoch`,
    the kill waits for the next mid-epoch progress event instead (training is between two checkpoints).

    Returns every event and, if kill() ran, (the event's sequence, the checkpointed epoch)."""
    from services.common.store import NotFoundError

    events, killed_at, due = [], None, None
    for event in client.watch(run_id):
        events.append(event)
        if killed_at is not None or event.WhichOneof("event") != "train":
            continue
        if due is None and event.train.epoch_finished:
            try:
                checkpoint = json.loads(store.get_bytes(f"runs/{run_id}/checkpoints/latest.json"))
            except NotFoundError:
                continue
            if checkpoint["epoch"] >= epoch:
                due = checkpoint["epoch"]
        if due is not None and (not mid_epoch or (not event.train.epoch_finished and event.train.batch > 0)):
            kill()
            killed_at = (event.sequence, due)
    return events, killed_at


def child_processes(pid: int, marker: str) -> list[int]:
    """The live (not zombie) child processes of `pid` whose command line contains `marker` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, parent = f.read().rpartition(")")[2].split()[:2]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if int(parent) == pid and state != "Z" and marker in command:
            found.append(int(entry))
    return found


def flip_byte(store, key: str, offset: int | None = None) -> None:
    """Bitrot: rewrites an object with one byte inverted (the middle one by default), as a failing disk would."""
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2 if offset is None else offset] ^= 0xFF
    store.put_bytes(key, bytes(data))


def remote_data(folder) -> tuple[str, str]:
    """A CSV (iris) and a two-class folder of 8x8 PNGs (15 digits each) copied into `folder`, a
    folder of the test's own: what a client on another machine uploads."""
    import shutil

    examples = os.path.join(ROOT, "examples", "data")
    shutil.copy(os.path.join(examples, "iris.csv"), folder / "flowers.csv")
    for digit in ("0", "1"):
        (folder / "digits" / digit).mkdir(parents=True)
        for name in sorted(os.listdir(os.path.join(examples, "digits", digit)))[:15]:
            shutil.copy(os.path.join(examples, "digits", digit, name), folder / "digits" / digit / name)
    return str(folder / "flowers.csv"), str(folder / "digits")


def cli(*args: str, env: Mapping[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`cookline ARGS...` run as a user runs it (a subprocess); its exit code, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "cookline.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def report_page(run_id: str, env: Mapping[str, str], out) -> str:
    """`cookline report RUN --out OUT` run as a user runs it; the HTML page it wrote."""
    done = cli("report", run_id, "--out", str(out), env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    with open(out, encoding="utf-8") as f:
        return f.read()
