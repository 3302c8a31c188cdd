"""python -m gateway: the gateway (PipelineService, plus the prediction proxy to serve)."""
from cookline.v1 import gateway_pb2, gateway_pb2_grpc
from gateway.proxy import SERVICE as SERVE_SERVICE, ServeProxy
from gateway.runs import RunStore
from gateway.service import PipelineServicer
from services.common.server import serve
from services.common.store import store_from_env


def register(server):
    gateway_pb2_grpc.add_PipelineServiceServicer_to_server(PipelineServicer(RunStore(store_from_env())), server)
    server.add_generic_rpc_handlers((ServeProxy().handler(),))
    return [gateway_pb2.DESCRIPTOR.services_by_name["PipelineService"].full_name, SERVE_SERVICE]


if __name__ == "__main__":
    serve("gateway", register, max_workers=256)  # each proxied prediction stream holds a worker
