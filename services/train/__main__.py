"""python -m services.train: the train service."""

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter off unless asked for
# Every epoch is a stream of unknown length that simply ends: that is how it is meant to end.
warnings.filterwarnings("ignore", message="Your input ran out of data")

import logging
import threading

from cookline import config
from cookline.v1 import train_pb2, train_pb2_grpc
from services.common import layout
from services.common.server import serve
from services.common.store import ObjectStore, store_from_env
from services.train.service import TrainServicer


def sweep(store: ObjectStore) -> None:
    """Start-up: the files of model versions a killed train left unpublished for longer than
    COOKLINE_ABANDONED_VERSION_S are removed (layout.sweep_abandoned_versions)."""
    seconds = config.abandoned_version_seconds()
    if not seconds:
        return
    try:
        layout.sweep_abandoned_versions(store, seconds)
    except Exception:  # a sweep that fails changes nothing a run needs
        logging.getLogger("cookline.train").exception("sweeping abandoned model versions failed")


def register(server):
    store = store_from_env()
    train_pb2_grpc.add_TrainServiceServicer_to_server(TrainServicer(store), server)
    threading.Thread(target=sweep, args=(store,), name="sweep-abandoned", daemon=True).start()
    return [train_pb2.DESCRIPTOR.services_by_name["TrainService"].full_name]


if __name__ == "__main__":
    serve("train", register)
