"""What verifying shard checksums costs collect's ReadDataset, measured in one run.

One uploaded dataset (256x784 float32 batches, local store) is streamed straight from collect twice
per round, alternating: as published (every shard verified against its sha256 in the manifest) and
through a copy of the manifest without the "sha256" fields (an old record: not verified). Prints
MB/s of each (best of --repeat) and their ratio.

    .venv/bin/python bench/checksums.py [--mb 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

from common import ROWS, data_plane, scratch, upload

from cookline import channels, tensors
from cookline.v1 import collect_pb2, data_pb2
from services.common import layout
from services.common.store import LocalStore

MB = 1e6


def read(env, ref) -> tuple[int, float]:
    """Bytes of features+label streamed by ReadDataset (batch 256, decoded as views) and the seconds."""
    call = channels.channel("collect", env).unary_stream(
        "/cookline.v1.CollectService/ReadDataset",
        request_serializer=collect_pb2.ReadDatasetRequest.SerializeToString,
        response_deserializer=None,
    )
    received, start = 0, time.perf_counter()
    for message in call(collect_pb2.ReadDatasetRequest(dataset=ref, batch_size=ROWS), timeout=3600):
        arrays, _ = tensors.decode_batch(message)
        received += arrays["features"].nbytes + arrays["label"].nbytes
    return received, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=512, help="data streamed per measurement, in MB")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each; the best is reported")
    args = parser.parse_args()

    folder = scratch("cookline-bench-sums-")
    stack, env = data_plane(folder)
    try:
        verified = upload(env, "bench", args.mb * 1_000_000).dataset.ref
        # The same shards under a second name, its manifest without checksums (as published before them).
        store = LocalStore(f"{folder}/cookline")
        prefix = layout.dataset_prefix("bench", verified.version)
        manifest = json.loads(store.get_bytes(prefix + layout.DATASET_MANIFEST))
        for shard in manifest["shards"]:
            store.put_bytes(
                layout.dataset_prefix("old", verified.version) + shard["key"],
                store.get_bytes(layout.dataset_prefix("bench", verified.version) + shard["key"]),
            )
            del shard["sha256"]
        manifest["ref"]["name"] = "old"
        store.put_bytes(
            layout.dataset_prefix("old", verified.version) + layout.DATASET_MANIFEST, json.dumps(manifest).encode()
        )
        unverified = data_pb2.DatasetRef(name="old", version=verified.version)
        best = {"verified (sha256 per shard)": 0.0, "not verified (old manifest)": 0.0}
        for _ in range(args.repeat):
            for name, ref in (("verified (sha256 per shard)", verified), ("not verified (old manifest)", unverified)):
                received, elapsed = read(env, ref)
                best[name] = max(best[name], received / elapsed / MB)
    finally:
        stack.stop_all()
        shutil.rmtree(folder, ignore_errors=True)

    print(
        f"ReadDataset from collect, local store, {len(manifest['shards'])} shards, "
        f"{received / MB:.0f} MB per read, best of {args.repeat}"
    )
    for name, mbs in best.items():
        print(f"  {name:32s} {mbs:8.0f} MB/s")
    ratio = best["verified (sha256 per shard)"] / best["not verified (old manifest)"]
    print(f"  ratio verified / not verified: {ratio:.2f}x")


if __name__ == "__main__":
    main()
