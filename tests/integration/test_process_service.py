"""Fit / Process through the real collect and process services on S3 (the `data_plane` fixture)."""

import grpc
import numpy as np
import pytest

from cookline import channels, tensors
from cookline.v1 import data_pb2, process_pb2, process_pb2_grpc
from cookline.v1 import pipeline_pb2 as pb
from dataplane import ingest
from services.common.splits import assignment as split_assignment


def test_fit_uses_the_train_split_only_and_process_streams_the_result(data_plane, tmp_path):
    env = data_plane[1]
    (tmp_path / "x.csv").write_text("x,label\n" + "".join(f"{i},c{i % 3}\n" for i in range(1000)))
    info = ingest(env, "fit-split", str(tmp_path / "x.csv"), label="label").dataset
    split = data_pb2.SplitSpec(validation=0.3, seed=5)
    process = process_pb2_grpc.ProcessServiceStub(channels.channel("process", env))
    fit = process.Fit(
        process_pb2.FitRequest(dataset=info.ref, split=split, ops=[pb.Op(min_max=pb.MinMaxOp())]), timeout=60
    )
    train = np.arange(1000)[split_assignment(1000, split) == data_pb2.SUBSET_TRAIN]
    assert fit.rows == len(train) == 700
    assert tensors.to_numpy(fit.ops[0].fitted["min"]).tolist() == [train.min()]
    assert tensors.to_numpy(fit.ops[0].fitted["max"]).tolist() == [train.max()]
    out = []
    for response in process.Process(
        process_pb2.ProcessRequest(
            dataset=info.ref, split=split, subset=data_pb2.SUBSET_VALIDATION, ops=fit.ops, batch_size=64
        ),
        timeout=60,
    ):
        out.append(tensors.batch_to_numpy(response.batch)["features"])
    values = np.concatenate(out)
    assert len(values) == 300 and values.min() >= -0.01  # validation rows scaled by the train fit
    bad = pb.Op(resize=pb.ResizeOp(height=0, width=1))
    with pytest.raises(grpc.RpcError) as err:
        process.Fit(process_pb2.FitRequest(dataset=info.ref, split=split, ops=[bad]), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "process[0].resize.height" in err.value.details()
