"""Collect's upload spool budget (COOKLINE_UPLOAD_SPOOL_MB), on a real collect process with S3
(SeaweedFS): an upload that would spool more than the budget ends RESOURCE_EXHAUSTED naming the
setting and publishes nothing; the budget is shared by the uploads in flight (one held open makes
another refused) and given back when an upload ends, whichever way it ends."""

import threading

import grpc
import pytest

from cookline.v1 import collect_pb2, pipeline_pb2
from dataplane import collect_stub, start_data_plane, versions

BUDGET_MB = 1
PIECE = 64 * 1024


def csv_bytes(rows: int) -> bytes:
    """A numeric CSV with a label column: `rows` rows of about 34 bytes."""
    lines = ["a,b,c,label"] + [
        f"{i * 0.5:.6f},{i % 7 * 1.25:.6f},{i % 13:.6f},{'yes' if i % 2 else 'no'}" for i in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def messages(name: str, data: bytes, hold: threading.Event | None = None):
    """The upload of `data` as one CSV file in PIECE-byte pieces; with `hold`, the stream waits for it
    before its last piece (an upload still in flight)."""
    yield collect_pb2.UploadDatasetRequest(dataset=name, source=pipeline_pb2.CollectSpec(format="csv", label="label"))
    starts = range(0, len(data), PIECE)
    for start in starts:
        if hold is not None and start == starts[-1]:
            assert hold.wait(300)
        yield collect_pb2.UploadDatasetRequest(
            file=collect_pb2.UploadFileChunk(path="data.csv", data=data[start : start + PIECE])
        )


def upload(env, name: str, data: bytes) -> collect_pb2.UploadDatasetResponse:
    return collect_stub(env).UploadDataset(messages(name, data), timeout=120)


@pytest.fixture(scope="module")
def collect(s3_server, tmp_path_factory):
    running, env = start_data_plane(
        s3_server, str(tmp_path_factory.mktemp("logs")), COOKLINE_UPLOAD_SPOOL_MB=str(BUDGET_MB)
    )
    with running:
        yield env


def test_an_upload_over_the_budget_is_resource_exhausted_and_publishes_nothing(collect):
    big = csv_bytes(50_000)  # about 1.7 MB
    assert len(big) > BUDGET_MB << 20
    with pytest.raises(grpc.RpcError) as caught:
        upload(collect, "too-big", big)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "COOKLINE_UPLOAD_SPOOL_MB" in caught.value.details()
    assert versions(collect, "too-big") == []
    small = upload(collect, "fits", csv_bytes(25_000))  # the refused upload gave its share back
    assert small.dataset.num_rows == 25_000


def test_uploads_in_flight_share_the_budget_and_give_it_back(collect):
    held_data = csv_bytes(18_000)  # about 0.6 MB, held open before its last piece
    other = csv_bytes(15_000)  # about 0.5 MB: fits alone, not beside the held one
    assert max(len(held_data), len(other)) < BUDGET_MB << 20 < len(held_data) + len(other)
    hold = threading.Event()
    stub = collect_stub(collect)
    held = stub.UploadDataset.future(messages("held", held_data, hold), timeout=300)
    refused = None
    try:
        # Together they pass the budget: whichever upload's pieces reach it second is refused (the
        # held one's, when collect reads them while an upload beside it spools).
        for _ in range(100):
            if held.done():
                refused = held.exception()
                break
            try:
                upload(collect, "beside", other)
            except grpc.RpcError as exc:
                refused = exc
                break
    finally:
        hold.set()
    assert refused is not None, "uploads passing the budget together were never refused"
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused
    assert "COOKLINE_UPLOAD_SPOOL_MB" in refused.details()
    if refused is not held.exception(timeout=300):  # the held upload was not the one refused: it ends well
        assert held.result().dataset.num_rows == 18_000
    assert upload(collect, "beside", other).dataset.num_rows == 15_000  # each share was given back
