"""python -m services.collect: the collect service."""

from cookline.v1 import collect_pb2
from services.collect.service import CollectServicer
from services.common.server import add_servicer, serve
from services.common.store import store_from_env


def register(server):
    return [
        add_servicer(
            server, collect_pb2.DESCRIPTOR.services_by_name["CollectService"], CollectServicer(store_from_env())
        )
    ]


if __name__ == "__main__":
    serve("collect", register)
