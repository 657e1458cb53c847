"""A proxy's complete config at one view generation: the generation pipeline's entry point.

`build_snapshot` turns the read models into Envoy resources (through the encode-once cache):
per inbound a listener and a local cluster; per MeshService port of the mesh an EDS cluster,
its ClusterLoadAssignment and an outbound listener on `<VIP>:<port>`; per explicit
`networking.outbound` a listener on `<address or 127.0.0.1>:<port>`.
"""

from __future__ import annotations

from collections.abc import Callable

from msgspec import Struct

from events import SERVICE_TAG, Dataplane, Outbound
from projections import MeshServiceRow
from xds_gateway import clusters, endpoints, listeners, names
from xds_gateway.cache import EncodedResource, ResourceCache
from xds_gateway.type_urls import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER
from xds_gateway.view import ProjectionView

__all__ = ["Snapshot", "build_snapshot"]



class Snapshot(Struct):
    resources: dict[str, dict[str, EncodedResource]]


def build_snapshot(view: ProjectionView, mesh: str, name: str, cache: ResourceCache) -> Snapshot:
    out: dict[str, dict[str, EncodedResource]] = {t: {} for t in PUSH_ORDER}
    row = view.dataplanes.get((mesh, name))
    if row is None:
        return Snapshot(out)

    def add(resource: EncodedResource) -> None:
        out[resource.type_url].setdefault(resource.name, resource)  # no duplicate names (#7)

    dp = row.dataplane
    _inbounds(dp, cache, add)
    services = view.meshservices.get(mesh, {})
    eps = view.endpoints.get(mesh, {})
    eps_bytes = view.endpoints_bytes.get(mesh, {})
    bind = dp.networking.transparent_proxying is None
    for ms_name in sorted(services):
        ms = services[ms_name]
        ep_row = eps.get(ms_name)
        ep_ports = {p.port.port: p for p in ep_row.ports} if ep_row is not None else {}
        vip = ms.status.vips[0].ip if ms.status.vips else None
        for port in ms.spec.ports:
            cname = names.msvc_cluster(mesh, ms_name, port.port)
            add(cache.get(CLUSTER, cname, "eds", lambda c=cname: clusters.eds_cluster(c)))
            port_eps = ep_ports.get(port.port)
            if port_eps is not None:
                zone = ep_row.zone if ep_row is not None else ""
                # keyed by the row's bytes as received (their hash is computed once and
                # kept by the bytes object), not by re-encoding it for every proxy
                add(cache.get(
                    ENDPOINT, cname, (zone, port.port, eps_bytes[ms_name]),
                    lambda c=cname, z=zone, p=port_eps: endpoints.load_assignment(c, z, p)))
            if vip is not None:
                add(_outbound(cache, vip, port.port, cname, bind=bind))
    for outbound in dp.networking.outbound:
        target = _explicit_target(outbound, services)
        if target is not None:
            cname = names.msvc_cluster(mesh, target[0], target[1])
            if cname in out[CLUSTER]:
                add(_outbound(cache, outbound.address or "127.0.0.1", outbound.port, cname))
    return Snapshot(out)


def _inbounds(dp: Dataplane, cache: ResourceCache,
              add: Callable[[EncodedResource], None]) -> None:
    for inbound in dp.networking.inbound:
        if inbound.state == "Ignored":
            continue
        address = inbound.address or dp.networking.address
        service_port = inbound.service_port or inbound.port
        service_address = inbound.service_address or "127.0.0.1"
        cname = names.local_cluster(service_port)
        add(cache.get(CLUSTER, cname, ("local", service_address, service_port),
                      lambda c=cname, a=service_address, p=service_port:
                      clusters.local_cluster(c, a, p)))
        lname = names.inbound_listener(address, inbound.port)
        # a DNS-named Dataplane listens on every address: Envoy binds IPs only
        bind = address if names.is_ip(address) else "0.0.0.0"
        add(cache.get(LISTENER, lname, ("inbound", bind, inbound.port, cname),
                      lambda n=lname, a=bind, p=inbound.port, c=cname:
                      listeners.tcp_listener(n, a, p, c),
                      refs=frozenset({cname})))


def _outbound(cache: ResourceCache, address: str, port: int, cluster: str, *,
              bind: bool = True) -> EncodedResource:
    lname = names.outbound_listener(address, port)
    return cache.get(
        LISTENER, lname, ("outbound", address, port, cluster, bind),
        lambda: listeners.tcp_listener(lname, address, port, cluster, bind=bind, freebind=True),
        refs=frozenset({cluster}),
    )


def _explicit_target(outbound: Outbound, services: dict[str, MeshServiceRow]
                     ) -> tuple[str, int] | None:
    """(MeshService name, port) an explicit outbound points at, if it exists."""
    ref = outbound.backend_ref
    if ref is not None:
        if ref.kind != "MeshService" or ref.name is None:
            return None
        service, port = ref.name, ref.port
    elif outbound.tags is not None and SERVICE_TAG in outbound.tags:
        service, port = outbound.tags[SERVICE_TAG], None
    else:
        return None
    ms = services.get(service)
    if ms is None:
        return None
    ports = [p.port for p in ms.spec.ports]
    if port is None:
        return (service, ports[0]) if len(ports) == 1 else None
    return (service, port) if port in ports else None
