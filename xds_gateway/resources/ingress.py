"""A zone ingress's config: one listener that routes mesh mTLS by SNI, passing TLS through.

Kuma (reference/multizone.md §3): a client in another zone reaches a MeshService of this zone
at the ingress's advertised address and originates mTLS to the service's own sidecars with
Kuma's SNI (`tls.sni`: `a<hash>.<name>.<port>.<mesh>.ms`, `mzms` for a
MeshMultiZoneService). The ingress never terminates it: `tls_inspector` reads the SNI from
the ClientHello, a filter chain per SNI (`server_names`) picks the cluster, and `tcp_proxy`
carries the bytes, so the mTLS session is end to end between the two sidecars and the
ingress holds no certificate.

What it routes to: in every mesh with mTLS on, each port of each MeshService of the
ingress's own zone (`ZoneIngress.zone`, pinned from the event's provenance), to that
service's endpoints for the port; each port of each MeshMultiZoneService, to the endpoints
of that zone's MeshServices it selects which have the port (the ingress serves a zone's
share of it; the client's Envoy chose this zone by priority). Clusters are plain EDS
clusters (no TLS of their own). A ZoneIngress with nothing to route gets no listener (Envoy
refuses one without filter chains).

The proxy's node id is `<ZONE_INGRESS_NODE>.<name>` (`ZONE_INGRESS_NODE` is no mesh name:
`_` is not valid in one), as `meshlog dataplane bootstrap --zone-ingress` writes it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from envoy.config.listener.v3.listener_components_pb2 import FilterChain, FilterChainMatch

from events import ZONE_INGRESS_NODE
from projections import EndpointsRow, MeshServiceRow, ZoneIngressRow
from xds_gateway.resources import clusters, endpoints, listeners, names, tls
from xds_gateway.resources.cache import EncodedResource, ResourceCache
from xds_gateway.type_urls import CLUSTER, ENDPOINT, LISTENER
from xds_gateway.view import ProjectionView

__all__ = ["ZONE_INGRESS_NODE", "Route", "ingress_resources", "ingress_routes"]


Route = tuple[str, str, list[tuple[str, EndpointsRow, int]]]
"""(SNI, cluster name, [(zone, endpoints row, port)]): one filter chain of the listener."""


def _zone(labels: dict[str, str]) -> str:
    return labels.get("kuma.io/zone", "")


def ingress_routes(view: ProjectionView, row: ZoneIngressRow) -> list[Route]:
    """The SNIs the ingress routes, sorted, each once (the first service by name wins a
    clash of display names)."""
    zone = row.zoneingress.zone
    routes: dict[str, Route] = {}
    for mesh in sorted(view.trust):
        services = view.meshservices.get(mesh, {})
        eps = view.endpoints.get(mesh, {})
        local = {name: ms for name, ms in sorted(services.items())
                 if zone and _zone(ms.labels) == zone and name in eps}
        for name, ms in local.items():
            for port in ms.spec.ports:
                sni = tls.sni(mesh, tls.sni_name(ms.labels, name), port.port)
                routes.setdefault(sni, (sni, names.msvc_cluster(mesh, name, port.port),
                                        [(zone or "", eps[name], port.port)]))
        for mz_name, mz in sorted(view.meshmultizoneservices.get(mesh, {}).items()):
            selector = mz.spec.selector.mesh_service.match_labels
            matched = [name for name, ms in local.items()
                       if all(ms.labels.get(k) == v for k, v in selector.items())]
            display = mz.labels.get("kuma.io/display-name", mz_name)
            for mz_port in mz.spec.ports:
                backends = [(zone or "", eps[name], mz_port.port) for name in matched
                            if _has_port(local[name], mz_port.port)]
                if not backends:
                    continue
                sni = tls.sni(mesh, display, mz_port.port, "mzms")
                routes.setdefault(sni, (sni, names.mzsvc_cluster(mesh, display, mz_port.port),
                                        backends))
    return [routes[sni] for sni in sorted(routes)]


def _has_port(ms: MeshServiceRow, port: int) -> bool:
    return any(p.port == port for p in ms.spec.ports)


def ingress_resources(view: ProjectionView, cache: ResourceCache, row: ZoneIngressRow,
                      add: Callable[[EncodedResource], None]) -> None:
    """Add the ingress's listener, its clusters and their endpoints."""
    routes = ingress_routes(view, row)
    if not routes:
        return
    for _, cname, backends in routes:
        add(cache.get(CLUSTER, cname, "eds", functools.partial(clusters.eds_cluster, cname)))
        groups: list[endpoints.Group] = []
        for zone, ep_row, port in backends:
            found = next((p for p in ep_row.ports if p.port.port == port), None)
            if found is not None:  # the service's own endpoints, never an ingress's
                groups.append((0, zone, found.endpoints))
        key = ("ingress", tuple((z, p, view.endpoints_bytes[r.mesh][r.name],
                                 view.addresses.answers(("endpoints", r.mesh, r.name)))
                                for z, r, p in backends))
        add(cache.get(ENDPOINT, cname, key, functools.partial(
            endpoints.prioritized_load_assignment, cname, groups, view.addresses.ip)))
    net = row.zoneingress.networking
    lname = names.inbound_listener(net.address, net.port)
    chains = tuple((sni, cname) for sni, cname, _ in routes)
    add(cache.get(LISTENER, lname, ("ingress", net.address, net.port, chains),
                  lambda: listeners.sni_listener(lname, net.address, net.port, [
                      FilterChain(filter_chain_match=FilterChainMatch(server_names=[sni]),
                                  filters=[listeners.tcp_proxy_filter(cname)])
                      for sni, cname in chains]),
                  refs=frozenset(cname for _, cname in chains)))
