"""Deploy and undeploy on every serve replica (RegistryService.DeployModel / UndeployModel, a run's
serve stage, the dashboard's deploy buttons).

A balanced call to serve's address reaches one replica. Here the gateway resolves that address to
every replica behind it and calls each one:

- `ipv4:a:p,b:p` / `ipv6:[a]:p,...`: each listed address;
- `host:port` or `dns:///host:port`: each address the name resolves to (every A/AAAA record: a
  headless Service, compose replicas sharing a name). A name that resolves to loopback addresses
  only (localhost) is one replica: serve processes on one machine cannot share a port;
- anything else (unix:...): the target itself.

Each replica's answer is kept (ReplicaResult), so a replica that failed is reported, never hidden.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc

from cookline import channels, config
from cookline.v1 import model_pb2, registry_pb2, serve_pb2, serve_pb2_grpc
from services.common import layout
from services.common.errors import Fail, invalid, not_found
from services.common.store import ObjectStore

log = logging.getLogger("cookline.gateway")

# Longest one replica's LoadModel may take (download, load, warm-up, XLA compile), in seconds.
LOAD_TIMEOUT_S = 300
# Longest one replica's UnloadModel may take, in seconds.
UNLOAD_TIMEOUT_S = 60


def split_host_port(address: str) -> tuple[str, str]:
    """ "host:port" or "[v6]:port" -> (host without brackets, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port


def resolve(target: str) -> list[tuple[str, str]]:
    """Every replica behind a serve target: (address to dial, host name its TLS certificate is
    checked against, or "" to check the address itself), sorted by address. UNAVAILABLE naming
    COOKLINE_SERVE_ADDR when a name does not resolve."""
    for scheme in ("ipv4:", "ipv6:"):
        if target.startswith(scheme):
            return sorted((a.strip(), "") for a in target[len(scheme) :].split(",") if a.strip())
    if target.startswith("dns:"):
        name = target[4:].lstrip("/")
        name = name.split("/", 1)[1] if "/" in name else name  # dns://authority/host:port
    elif ":" in target and "/" not in target and not target.startswith("unix"):
        name = target  # host:port, resolved by DNS as gRPC does
    else:
        return [(target, "")]
    host, port = split_host_port(name)
    if not host or not port.isdigit():
        return [(target, "")]
    try:
        ipaddress.ip_address(host)
        return [(name if ":" not in host else f"[{host}]:{port}", "")]  # already one address
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Fail(
            grpc.StatusCode.UNAVAILABLE, f"COOKLINE_SERVE_ADDR: cannot resolve {host!r} to serve replicas ({exc})"
        ) from None
    ips = sorted({str(info[4][0]) for info in found})
    if all(ipaddress.ip_address(ip.split("%")[0]).is_loopback for ip in ips):
        return [(target, "")]  # this machine: one serve process on this port
    return [(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}", host) for ip in ips]


def _on_each(call: Callable[[serve_pb2_grpc.ServeServiceStub], object], target: str | None = None):
    """`call(stub)` on every replica at once: [(address, response or None, code, message)]."""
    replicas = resolve(target or config.address("serve"))
    if not replicas:
        raise Fail(grpc.StatusCode.UNAVAILABLE, "COOKLINE_SERVE_ADDR names no serve replica")

    def one(replica: tuple[str, str]):
        address, host = replica
        options = config.client_options() + ([("grpc.ssl_target_name_override", host)] if host else [])
        with channels.channel("serve", target=address, options=options) as channel:
            try:
                return address, call(serve_pb2_grpc.ServeServiceStub(channel)), grpc.StatusCode.OK, ""
            except grpc.RpcError as exc:
                return address, None, exc.code(), exc.details() or exc.code().name

    with ThreadPoolExecutor(max_workers=len(replicas)) as pool:
        return list(pool.map(one, replicas))


def _summary(results: list[registry_pb2.ReplicaResult]) -> str:
    return "; ".join(f"{r.address}: {r.code} {r.message}".rstrip() for r in results)


def deploy(store: ObjectStore, request: registry_pb2.DeployModelRequest) -> registry_pb2.DeployModelResponse:
    """LoadModel on every serve replica. The policy's version is checked in the store first, so an
    unknown model, version or alias is NOT_FOUND before any replica is called."""
    name, version, alias = request.model.name, int(request.model.version), request.alias
    layout.check_name("model.name", name)
    if version < 0:
        raise invalid(f"model.version: {version} is negative")
    if alias:
        if version:
            raise invalid(f"model.version: {version} given together with alias {alias!r}; give one")
        version = layout.read_alias(store, name, alias)
    layout.read_model_record(store, name, version)  # NOT_FOUND naming the model or version
    load = serve_pb2.LoadModelRequest(model=request.model, alias=alias)
    if request.HasField("batching"):
        load.batching.CopyFrom(request.batching)
    answers = _on_each(lambda stub: stub.LoadModel(load, timeout=LOAD_TIMEOUT_S))
    response = registry_pb2.DeployModelResponse()
    for address, answer, code, message in answers:
        served = answer.metadata.model.version if answer is not None else 0
        response.replicas.add(address=address, code=code.name, message=message, version=served)
        if answer is not None and not response.HasField("metadata"):
            response.metadata.CopyFrom(answer.metadata)
    if not response.HasField("metadata"):
        first = next(code for _, _, code, _ in answers)
        raise Fail(first, f"no serve replica deployed model {name!r}: {_summary(list(response.replicas))}")
    failed = [r for r in response.replicas if r.code != "OK"]
    if failed:
        log.warning("model %s deployed, but not on %d serve replicas: %s", name, len(failed), _summary(failed))
    return response


def undeploy(store: ObjectStore, name: str) -> registry_pb2.UndeployModelResponse:
    """Removes the deployed marker (the desired state: replicas that start later do not load the
    model), then UnloadModel on every serve replica."""
    layout.check_name("name", name)
    marker = layout.read_deployed(store, name)
    layout.delete_deployed(store, name)
    answers = _on_each(lambda stub: stub.UnloadModel(serve_pb2.UnloadModelRequest(name=name), timeout=UNLOAD_TIMEOUT_S))
    response = registry_pb2.UndeployModelResponse(model=model_pb2.ModelRef(name=name))
    for address, answer, code, message in answers:
        unloaded = answer.model.version if answer is not None else 0
        response.replicas.add(address=address, code=code.name, message=message, version=unloaded)
        if unloaded and not response.model.version:
            response.model.version = unloaded
    if marker is not None:
        response.model.version = marker.version or response.model.version
    told = [code for _, _, code, _ in answers if code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)]
    if marker is None and not any(code == grpc.StatusCode.OK for _, _, code, _ in answers) and told:
        layout.read_model_record(store, name, 0)  # NOT_FOUND: no such model at all
        raise not_found(f"model {name!r} is not deployed")
    if not told:
        raise Fail(
            grpc.StatusCode.UNAVAILABLE,
            f"model {name!r}: its deployed marker is removed (replicas starting from now on will not load it), "
            f"but no serve replica could be told: {_summary(list(response.replicas))}",
        )
    failed = [r for r in response.replicas if r.code not in ("OK", "NOT_FOUND")]
    if failed:
        log.warning("model %s undeployed, but %d serve replicas were not told: %s", name, len(failed), _summary(failed))
    return response
