"""The gateway's HTTP port: the dashboard (static pages at /) and the JSON API (/api/)."""
from __future__ import annotations

import os
from typing import Mapping

from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.web import server
from gateway.web.api import Api
from services.common.store import ObjectStore

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


async def _index(_request):
    return FileResponse(os.path.join(STATIC, "index.html"))


def app(store: ObjectStore, env: Mapping[str, str] | None = None):
    routes = Api(store, env).routes() + [
        Route("/", _index, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return server.build(routes, env)


def start(store: ObjectStore, env: Mapping[str, str] | None = None) -> str:
    """Serves the dashboard and the API on COOKLINE_GATEWAY_HTTP_ADDR; returns the address, for the log."""
    return server.start(app(store, env), "gateway", env)
