"""Typed store records (protos/cookline/v1/records.proto) through services/common/layout.py:
written as protobuf JSON, read back as messages, and the plain-JSON records of earlier
versions still load. A local store; no server process."""

import json

from cookline.v1 import records_pb2, serve_pb2
from services.common import layout


def test_deployed_and_alias_records_round_trip(local_store):
    record = records_pb2.DeployedRecord(
        policy="alias",
        version=3,
        alias="production",
        batching=serve_pb2.BatchingConfig(max_batch_size=64, max_queue_delay_ms=2),
    )
    layout.write_deployed(local_store, "iris", record)
    back = layout.read_deployed(local_store, "iris")
    assert (back.policy, back.version, back.alias, back.batching.max_batch_size) == ("alias", 3, "production", 64)
    assert back.updated_at.endswith("Z")
    stored = json.loads(local_store.get_bytes("models/iris/deployed.json"))
    assert stored["policy"] == "alias" and stored["batching"]["max_queue_delay_ms"] == 2  # proto field names
    assert stored["version"] == 3  # a JSON number, as the records before records.proto had
    assert layout.deployed_version(local_store, "iris") == 3 and layout.deployed_models(local_store) == ["iris"]
    layout.delete_deployed(local_store, "iris")
    assert layout.read_deployed(local_store, "iris") is None and layout.deployed_version(local_store, "iris") == 0


def test_records_of_earlier_versions_still_load(local_store):
    """Before records.proto: json.dumps of plain dicts (ints as numbers, extra keys possible)."""
    local_store.put_bytes(
        "models/iris/deployed.json",
        json.dumps(
            {
                "policy": "version",
                "version": 2,
                "alias": "",
                "batching": {"max_batch_size": 32, "max_queue_delay_ms": 0},
                "updated_at": "2026-01-01T00:00:00.000Z",
            },
            indent=1,
        ).encode(),
    )
    local_store.put_bytes(
        "models/iris/aliases/stable.json", json.dumps({"version": 1, "updated_at": "2026-01-01T00:00:00.000Z"}).encode()
    )
    local_store.put_bytes("models/iris/aliases/next.json", json.dumps({"version": 2, "note": "newer field"}).encode())
    record = layout.read_deployed(local_store, "iris")
    assert (record.policy, record.version, record.batching.max_batch_size) == ("version", 2, 32)
    assert layout.read_alias(local_store, "iris", "stable") == 1
    assert layout.aliases(local_store, "iris") == {"stable": 1, "next": 2}
