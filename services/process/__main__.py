"""python -m services.process: the process service."""
from cookline.v1 import process_pb2, process_pb2_grpc
from services.common.server import serve
from services.process.service import ProcessServicer


def register(server):
    process_pb2_grpc.add_ProcessServiceServicer_to_server(ProcessServicer(), server)
    return [process_pb2.DESCRIPTOR.services_by_name["ProcessService"].full_name]


if __name__ == "__main__":
    serve("process", register)
