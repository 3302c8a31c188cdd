"""python -m services.process: the process service."""

from cookline.v1 import process_pb2
from services.common.server import add_servicer, serve
from services.process.service import ProcessServicer


def register(server):
    return [add_servicer(server, process_pb2.DESCRIPTOR.services_by_name["ProcessService"], ProcessServicer())]


if __name__ == "__main__":
    serve("process", register)
