"""python -m services.serve: the serve service."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter off unless asked for

from cookline.v1 import serve_pb2, serve_pb2_grpc
from services.common.server import serve
from services.common.store import store_from_env
from services.serve.service import ServeServicer


def register(server):
    serve_pb2_grpc.add_ServeServiceServicer_to_server(ServeServicer(store_from_env()), server)
    return [serve_pb2.DESCRIPTOR.services_by_name["ServeService"].full_name]


if __name__ == "__main__":
    serve("serve", register)
