"""Plugins on the service side: loading them at start-up, importing what a component names as
its implementation, and the PluginService every service answers (what it has loaded).

The declarations (names, parameters, checks) live in cookline.spec.plugins; a service loads
them with the built-ins before it serves, so its own checks know the plugins too.
"""

from __future__ import annotations

import importlib
import threading

from cookline.spec import plugins as spec_plugins
from cookline.spec.params import Component
from cookline.v1 import plugins_pb2, plugins_pb2_grpc

_lock = threading.Lock()
_classes: dict[str, type] = {}


def implementation(component: Component) -> type:
    """The class `component.implementation` ("module:attribute") names, imported once."""
    with _lock:
        found = _classes.get(component.implementation)
        if found is None:
            module, _, attribute = component.implementation.partition(":")
            found = _classes[component.implementation] = getattr(importlib.import_module(module), attribute)
        return found


def list_response(service: str) -> plugins_pb2.ListPluginsResponse:
    """What this process loaded, for ListPlugins."""
    return plugins_pb2.ListPluginsResponse(
        service=service,
        plugins=[
            plugins_pb2.PluginInfo(
                kind=p.kind,
                name=p.name,
                distribution=p.distribution,
                version=p.version,
                error=p.error,
                params=list(p.params),
            )
            for p in spec_plugins.load()
        ],
    )


class PluginServicer(plugins_pb2_grpc.PluginServiceServicer):
    """ListPlugins on a threaded server."""

    def __init__(self, service: str):
        self.service = service

    def ListPlugins(self, request, context):
        return list_response(self.service)


class AsyncPluginServicer(plugins_pb2_grpc.PluginServiceServicer):
    """ListPlugins on a grpc.aio server."""

    def __init__(self, service: str):
        self.service = service

    async def ListPlugins(self, request, context):
        return list_response(self.service)


SERVICE = plugins_pb2.DESCRIPTOR.services_by_name["PluginService"]
