"""The gateway's HTTP port: the dashboard (static pages at /) and the JSON API (/api/).

Served by the shared HTTP front door (services.common.http): the same bearer token (every
/api/ path; the pages themselves are public, they hold no data), TLS files and body limit as
the gRPC port. Browsers on other origins may call the API only when COOKLINE_CORS_ORIGINS
lists them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cookline import config
from gateway.web.api import Api
from services.common import http

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


async def _index(_request):
    return FileResponse(os.path.join(STATIC, "index.html"))


def app(env: Mapping[str, str] | None = None) -> Starlette:
    routes = Api(env).routes() + [
        Route("/", _index, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = []
    origins = config.cors_origins(env)
    if origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST", "PUT"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    return Starlette(routes=routes, middleware=middleware, exception_handlers=http.exception_handlers())


def public_paths() -> tuple[str, ...]:
    """The pages and their scripts: no data, so no token (the API calls they make carry it).
    The app is served by services.common.server.serve(http_app=...), on COOKLINE_GATEWAY_HTTP_ADDR."""
    return ("/", *(f"/static/{name}" for name in sorted(os.listdir(STATIC))))
