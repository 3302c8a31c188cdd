"""python -m services.serve: the serve service (cookline.v1.ServeService and the
OIP v2 inference.GRPCInferenceService on one port; OIP v2 REST on its HTTP port,
COOKLINE_SERVE_HTTP_ADDR, through the same servicer and batchers)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter off unless asked for

import asyncio
import logging
import sys
import tempfile
import threading
import time

from cookline import config
from cookline.v1 import serve_pb2, serve_pb2_grpc
from inference import grpc_service_pb2_grpc as oip_grpc
from services.common.server import serve_async
from services.common.store import store_from_env
from services.serve import metrics, oip, rest
from services.serve.inputs import Limits
from services.serve.models import ModelManager
from services.serve.service import ServeServicer
from services.serve.streaming import ActiveStreams

log = logging.getLogger("cookline.serve")

GIL_SWITCH_INTERVAL_S = 0.0005

models = ModelManager(store_from_env(), tempfile.mkdtemp(prefix="cookline-serve-"), Limits.from_env())
streams = ActiveStreams()
inference = oip.InferenceServicer(models, streams)


def register(server):
    models.loop = asyncio.get_running_loop()  # batchers run on the server's loop
    serve_pb2_grpc.add_ServeServiceServicer_to_server(ServeServicer(models, streams), server)
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(inference, server)
    return [serve_pb2.DESCRIPTOR.services_by_name["ServeService"].full_name, oip.service_name()]


def on_start(health):
    """Overall health is SERVING from here; each deployed model turns SERVING under its name once warm."""
    models.attach_health(health)
    metrics.start(models, streams)  # Prometheus text endpoint, when COOKLINE_SERVE_METRICS_ADDR is set
    threading.Thread(target=models.load_deployed, name="load-deployed", daemon=True).start()
    if (every := config.serve_reconcile_seconds()) > 0:
        threading.Thread(target=_reconcile_every, args=(every,), name="reconcile", daemon=True).start()


def _reconcile_every(seconds: float) -> None:
    """Follows the store's deployed records for the life of the process (ModelManager.reconcile)."""
    while True:
        time.sleep(seconds)  # a period, not a wait for readiness
        try:
            models.reconcile()
        except Exception:  # the store unreachable for a while: the next round tries again
            log.warning("could not read the deployed records; trying again in %.0f s", seconds, exc_info=True)


if __name__ == "__main__":
    # The loop waiting for the GIL behind a busy thread (a model running on its own
    # thread, a deploy) waits up to the switch interval; Python's default 5 ms shows
    # up in the tail latency under load.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    serve_async("serve", register, on_start=on_start, http_app=lambda: rest.app(inference))
