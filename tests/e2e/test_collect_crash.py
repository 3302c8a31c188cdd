"""SIGKILL collect mid-ingest: no dataset version becomes visible (no manifest), the gateway
retries the collect stage once collect is back, and the retried ingest publishes the whole
version with no stray shard of the killed attempt left behind."""

import json
import signal

from cookline.client import Client
from cookline.v1 import gateway_pb2
from helpers import BIG_CSV_ROWS, watch_and_kill_mid_ingest, write_big_csv
from services.common.store import store_from_env

STACK_ENV = {"COOKLINE_SHARD_MB": "1"}  # many shards: the kill lands after some are written


def test_collect_killed_mid_ingest_publishes_nothing_and_the_retry_succeeds(stack, tmp_path):
    services, env = stack
    store = store_from_env(env)
    source = tmp_path / "big.csv"
    write_big_csv(source)
    text = (
        f"name: bigcsv\ncollect: {{source: {source}, label: label}}\n"
        "train: {model: mlp, hidden_units: [8], epochs: 1, batch_size: 4096}\n"
    )
    keys = []

    def restart_collect():
        services.stop("collect", signal.SIGKILL)
        keys.extend(store.list("datasets/bigcsv/"))  # dead mid-ingest: shards may be on the store, no version
        services.start("collect")  # what a supervisor (compose, k8s) does

    with Client(env=env) as client:
        run = client.submit(text)
        events, killed_at = watch_and_kill_mid_ingest(client, run.run_id, restart_collect)
        final = client.get_run(run.run_id)

    assert killed_at is not None and killed_at.rows_read < BIG_CSV_ROWS
    assert not [k for k in keys if k.endswith("manifest.json")], keys
    assert keys, "the kill should land after some shards were written"
    assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED, final.reason
    assert any(e.WhichOneof("event") == "stage" and "lost the collect service" in e.stage.message for e in events)
    # the retried ingest published the complete version, and only its own shards
    prefix = f"datasets/bigcsv/{final.dataset.version}/"
    manifest = json.loads(store.get_bytes(prefix + "manifest.json"))
    assert manifest["num_rows"] == BIG_CSV_ROWS
    shards = {prefix + s["key"] for s in manifest["shards"]}
    assert set(store.list("datasets/bigcsv/")) == shards | {prefix + "manifest.json"}
    assert final.model.name == "bigcsv" and store.exists(f"models/bigcsv/{final.model.version}/cookline.json")
