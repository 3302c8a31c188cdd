"""python -m gateway: the gateway (PipelineService, RegistryService, and the proxies to serve and collect)
on its gRPC port, the dashboard and JSON API on its HTTP port, and, when COOKLINE_GATEWAY_PREDICT_ADDR
is set, the TCP relay to serve on that port (gateway/relay.py, a process of its own)."""

import threading

from cookline.v1 import gateway_pb2, gateway_pb2_grpc, registry_pb2, registry_pb2_grpc
from gateway import relay, web
from gateway.proxy import SERVICE as SERVE_SERVICE
from gateway.proxy import CollectProxy, ServeProxy
from gateway.registry import RegistryServicer
from gateway.runs import RunStore
from gateway.service import PipelineServicer
from services.common.server import serve
from services.common.store import store_from_env


def register(server):
    store = store_from_env()
    pipelines = PipelineServicer(RunStore(store))
    gateway_pb2_grpc.add_PipelineServiceServicer_to_server(pipelines, server)
    # runs a previous gateway left unfinished carry on (in the background: start-up does not wait)
    threading.Thread(target=pipelines.executor.recover, name="recover-runs", daemon=True).start()
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(store), server)
    server.add_generic_rpc_handlers((ServeProxy().handler(), CollectProxy().handler()))
    return [
        gateway_pb2.DESCRIPTOR.services_by_name["PipelineService"].full_name,
        registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name,
        SERVE_SERVICE,
        CollectProxy.service,
    ]


def main() -> None:
    # max_workers: each proxied prediction stream holds a worker. The HTTP port (COOKLINE_GATEWAY_HTTP_ADDR)
    # serves the dashboard and the JSON API; its pages are public, /api/ needs the token.
    relay_process = relay.start_from_env()  # a taken port stops the start-up here, naming the setting
    try:
        serve("gateway", register, max_workers=256, http_app=web.app, http_public=web.public_paths())
    finally:  # the relay also exits by itself when this process ends (its stdin closes)
        if relay_process is not None:
            relay_process.kill()


if __name__ == "__main__":
    main()
