"""python -m gateway: the gateway (PipelineService)."""
from cookline.v1 import gateway_pb2, gateway_pb2_grpc
from gateway.runs import RunStore
from gateway.service import PipelineServicer
from services.common.server import serve
from services.common.store import store_from_env


def register(server):
    gateway_pb2_grpc.add_PipelineServiceServicer_to_server(PipelineServicer(RunStore(store_from_env())), server)
    return [gateway_pb2.DESCRIPTOR.services_by_name["PipelineService"].full_name]


if __name__ == "__main__":
    serve("gateway", register)
