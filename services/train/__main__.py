"""python -m services.train: the train service."""

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter off unless asked for
# Every epoch is a stream of unknown length that simply ends: that is how it is meant to end.
warnings.filterwarnings("ignore", message="Your input ran out of data")

from cookline.v1 import train_pb2, train_pb2_grpc
from services.common.server import serve
from services.common.store import store_from_env
from services.train.service import TrainServicer


def register(server):
    train_pb2_grpc.add_TrainServiceServicer_to_server(TrainServicer(store_from_env()), server)
    return [train_pb2.DESCRIPTOR.services_by_name["TrainService"].full_name]


if __name__ == "__main__":
    serve("train", register)
