"""python -m services.collect: the collect service."""
from cookline.v1 import collect_pb2, collect_pb2_grpc
from services.collect.service import CollectServicer
from services.common.server import serve
from services.common.store import store_from_env


def register(server):
    collect_pb2_grpc.add_CollectServiceServicer_to_server(CollectServicer(store_from_env()), server)
    return [collect_pb2.DESCRIPTOR.services_by_name["CollectService"].full_name]


if __name__ == "__main__":
    serve("collect", register)
