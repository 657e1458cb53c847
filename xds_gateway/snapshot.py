"""A proxy's complete config at one view generation: the generation pipeline's entry point.

`build_snapshot` turns the read models into Envoy resources (through the encode-once cache):

- per inbound a listener and a local cluster;
- per MeshService port the proxy may reach (`reachable.py`: the Mesh's `meshServices.mode`
  and the Dataplane's `reachableBackends`) an EDS cluster, its ClusterLoadAssignment and an
  outbound listener on `<VIP>:<port>`;
- per explicit `networking.outbound` a listener on `<address or 127.0.0.1>:<port>`;
- with transparent proxying, the DNS listener (`dns.py`) answering the reachable services'
  hostnames with their VIPs;
- for proxyless gRPC nodes only, per reachable port and target an api_listener and its
  RouteConfiguration (`proxyless.py`).
"""

from __future__ import annotations

from collections.abc import Callable

from msgspec import Struct

from events import SERVICE_TAG, Dataplane, Outbound
from projections import MeshServiceRow
from xds_gateway import clusters, dns, endpoints, listeners, names, proxyless
from xds_gateway.cache import EncodedResource, ResourceCache
from xds_gateway.node import ProxyNode
from xds_gateway.reachable import explicit_outbound_allowed, mesh_mode, reachable
from xds_gateway.type_urls import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE
from xds_gateway.view import ProjectionView

__all__ = ["Snapshot", "build_snapshot"]

_ENVOY = ProxyNode()
Add = Callable[[EncodedResource], None]


class Snapshot(Struct):
    resources: dict[str, dict[str, EncodedResource]]


def build_snapshot(view: ProjectionView, mesh: str, name: str, cache: ResourceCache, *,
                   node: ProxyNode = _ENVOY) -> Snapshot:
    """Everything Dataplane `<mesh>.<name>` gets; `node` (from the stream's first request,
    see `node.proxy_node`) says whether it is a gRPC client and where its DNS listens."""
    out: dict[str, dict[str, EncodedResource]] = {t: {} for t in PUSH_ORDER}
    row = view.dataplanes.get((mesh, name))
    if row is None:
        return Snapshot(out)

    def add(resource: EncodedResource) -> None:
        out[resource.type_url].setdefault(resource.name, resource)  # no duplicate names (#7)

    dp = row.dataplane
    _inbounds(dp, cache, add)
    services = view.meshservices.get(mesh, {})
    mode = mesh_mode(view.meshes.get(mesh))
    tp = dp.networking.transparent_proxying
    records: set[tuple[str, str]] = set()
    for ms_name, ports in sorted(reachable(mode, dp, services).items()):
        ms = services[ms_name]
        vip = ms.status.vips[0].ip if ms.status.vips else None
        hostnames = sorted(a.hostname for a in ms.status.addresses)
        if vip is not None:
            records.update((h, vip) for h in hostnames)
        for port in ports:
            cname = _service_port(view, cache, mesh, ms_name, port, add)
            if vip is not None:
                add(_outbound(cache, vip, port, cname, bind=tp is None))
            if node.is_grpc:
                for target in names.grpc_targets(ms_name, hostnames, port):
                    _grpc_target(cache, target, cname, add)
    for outbound in dp.networking.outbound:
        target = _explicit_target(outbound, services)
        if target is not None and explicit_outbound_allowed(mode, outbound):
            cname = _service_port(view, cache, mesh, target[0], target[1], add)
            add(_outbound(cache, outbound.address or "127.0.0.1", outbound.port, cname))
    if tp is not None:
        add(_dns(cache, node.dns_port, tuple(sorted(records))))
    return Snapshot(out)


def _service_port(view: ProjectionView, cache: ResourceCache, mesh: str, service: str,
                  port: int, add: Add) -> str:
    """Add the EDS cluster of a MeshService port and its endpoints; return the cluster name."""
    cname = names.msvc_cluster(mesh, service, port)
    add(cache.get(CLUSTER, cname, "eds", lambda: clusters.eds_cluster(cname)))
    ep_row = view.endpoints.get(mesh, {}).get(service)
    if ep_row is None:
        return cname
    port_eps = next((p for p in ep_row.ports if p.port.port == port), None)
    if port_eps is not None:
        # keyed by the row's bytes as received (their hash is computed once and kept by the
        # bytes object), not by re-encoding it for every proxy
        key = (ep_row.zone, port, view.endpoints_bytes[mesh][service])
        add(cache.get(ENDPOINT, cname, key,
                      lambda: endpoints.load_assignment(cname, ep_row.zone, port_eps)))
    return cname


def _inbounds(dp: Dataplane, cache: ResourceCache, add: Add) -> None:
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


def _dns(cache: ResourceCache, port: int, records: tuple[tuple[str, str], ...]
         ) -> EncodedResource:
    return cache.get(LISTENER, names.DNS_LISTENER, ("dns", port, records),
                     lambda: dns.dns_listener(names.DNS_LISTENER, "127.0.0.1", port, records))


def _grpc_target(cache: ResourceCache, target: str, cluster: str, add: Add) -> None:
    # the listener references no cluster directly: its route does, and gRPC asks for the
    # cluster by the route's name (xds-rules.md #13: LDS -> RDS -> CDS -> EDS)
    add(cache.get(LISTENER, target, "api_listener", lambda: proxyless.api_listener(target)))
    add(cache.get(ROUTE, target, ("grpc", cluster),
                  lambda: proxyless.route_configuration(target, cluster),
                  refs=frozenset({cluster})))


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
