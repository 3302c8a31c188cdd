"""Train's epoch feed (services/train/feed.py) without a live stack."""

import numpy as np


def test_cancelling_during_the_first_epoch_never_leaves_training_waiting():
    """The read-ahead stops on cancel without queuing more; the epoch being read must end too."""
    import threading

    from cookline import tensors
    from cookline.v1 import data_pb2, process_pb2
    from cookline.v1 import pipeline_pb2 as pb
    from services.train.feed import Cancelled, EpochFeed, FeedSize

    cancelled = threading.Event()

    class Call:  # Process's stream: one message, then the caller cancels, then one more
        def __iter__(self):
            yield tensors.encode_batch({"features": np.zeros((4, 2), np.float32), "label": np.zeros(4, np.int32)})
            cancelled.set()
            yield tensors.encode_batch({"features": np.zeros((4, 2), np.float32), "label": np.zeros(4, np.int32)})

        def cancel(self):
            pass

    request = process_pb2.ProcessRequest(
        subset=data_pb2.SUBSET_TRAIN, ops=[pb.Op(shuffle=pb.ShuffleOp(buffer=100, seed=1))]
    )
    for rows in (100, None):  # rows kept in TensorFlow, and rows kept as NumPy batches
        size = FeedSize(2, rows=rows, budget_bytes=1 << 20)
        feed = EpochFeed(lambda _request: Call(), request, ("features", "float32", [2], "int32"), cancelled, size)
        feed = feed.start()
        outcome = []

        def read(feed=feed, rows=rows, outcome=outcome):
            try:
                list(feed.order() if rows else feed.chunks())
            except Cancelled:
                outcome.append("cancelled")

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout=30)
        assert outcome == ["cancelled"]
        cancelled.clear()


def test_training_rows_are_shuffled_by_default_seeded_by_train_seed_unless_a_shuffle_op_says_otherwise():
    from cookline.v1 import pipeline_pb2 as pb
    from services.train.service import training_ops

    spec = pb.TrainSpec(model="mlp", seed=9)
    standardize = pb.Op(standardize=pb.StandardizeOp())
    added = training_ops([standardize], spec, train_rows=500, row_bytes=16)
    assert added[0] == standardize and added[1].shuffle == pb.ShuffleOp(buffer=500, seed=9)  # every row
    assert training_ops([standardize], spec, train_rows=10**9, row_bytes=1 << 30)[1].shuffle.buffer == 1000
    opt_out = pb.Op(shuffle=pb.ShuffleOp(buffer=1))  # explicit: rows in dataset order
    assert training_ops([standardize, opt_out], spec, 500, 16) == [standardize, opt_out]
