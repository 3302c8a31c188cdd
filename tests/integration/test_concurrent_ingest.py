"""Two collect processes (replicas on one store) ingesting identical content at the same instant publish
one version and lose no shard: the manifest is written create-only, so exactly one attempt publishes, the
other removes its own shards and answers with the published version (reused)."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from dataplane import ingest, read_all, versions
from helpers import free_ports, unique_bucket
from services.common import layout
from services.common.store import store_from_env

ROUNDS = 12  # contents raced; each round the two ingests start together behind a barrier
ROWS = 400


@pytest.fixture(params=["local", "s3"])
def replicas(request, s3_server, tmp_path_factory):
    """Two collect processes on one store; yields (env of replica 0, env of replica 1)."""
    from cookline.stack import Stack

    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MINIO_") and k not in ("COOKLINE_DATA_DIR", "COOKLINE_BUCKET")
    }
    if request.param == "s3":
        base.update(s3_server.env(unique_bucket("twin")))
    else:
        base["COOKLINE_DATA_DIR"] = str(tmp_path_factory.mktemp("store"))
    base["COOKLINE_SHARD_MB"] = "0.005"  # a few shards per round
    ports = free_ports(2, set(s3_server.ports.values()))
    envs = [dict(base, COOKLINE_COLLECT_ADDR=f"127.0.0.1:{port}") for port in ports]
    stacks = [Stack(env, log_dir=str(tmp_path_factory.mktemp("logs"))) for env in envs]
    try:
        for stack in stacks:
            stack.start("collect")
        for stack in stacks:
            stack.wait_healthy(timeout=60)
        yield envs
    finally:
        for stack in stacks:
            stack.stop_all()


def test_identical_ingests_on_two_replicas_publish_one_version_and_lose_no_shard(replicas, tmp_path):
    store = store_from_env(replicas[0])
    for round_ in range(ROUNDS):
        rng = np.random.default_rng(round_)
        x = rng.normal(size=(ROWS, 3)).round(3)
        path = tmp_path / f"same-{round_}.csv"
        path.write_text("a,b,c,label\n" + "".join(f"{a},{b},{c},{'hi' if a > 0 else 'lo'}\n" for a, b, c in x))
        barrier, answers, errors = threading.Barrier(2), [None, None], []

        def run(i, barrier=barrier, answers=answers, errors=errors, path=path):
            try:
                barrier.wait()
                answers[i] = ingest(replicas[i], "twin", str(path), label="label")
            except Exception as exc:  # reported by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], f"round {round_}: {errors}"
        ref = answers[0].dataset.ref
        assert answers[1].dataset.ref == ref
        prefix = layout.dataset_prefix("twin", ref.version)
        manifest = json.loads(store.get_bytes(prefix + layout.DATASET_MANIFEST))
        stored = set(store.list(prefix))
        missing = [s["key"] for s in manifest["shards"] if prefix + s["key"] not in stored]
        assert missing == [], f"round {round_}: the manifest names shards that are gone"
        assert stored == {prefix + layout.DATASET_MANIFEST} | {prefix + s["key"] for s in manifest["shards"]}
        # one attempt published, the other answered with its version
        assert sorted(a.reused for a in answers) == [False, True], f"round {round_}: both published"
        got = read_all(replicas[1], ref)
        np.testing.assert_allclose(got["features"], x.astype(np.float32))
    assert len(versions(replicas[0], "twin")) == ROUNDS
