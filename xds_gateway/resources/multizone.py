"""A MeshMultiZoneService port for Envoy: its EDS cluster and ClusterLoadAssignment.

Kuma's layout (reference/multizone.md §2): the cluster `<mesh>_<display name>___mzsvc_<port>`
(namespace and zone empty: the resource is global's); its endpoints are those of the
MeshServices the projector matched (`MeshMultiZoneServiceRow.backends`: local ones at
priority 0, other zones' Available ones at 1) for the MeshService port of the same number,
a MeshService without that port contributing nothing; each group's locality is the
MeshService's zone. Its outbound listener on the VIP and its DNS record are made with the
MeshServices' (`snapshot.py`), and so is the listener of an explicit outbound whose
`backendRef` names one (`explicit_target`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from events import Outbound
from projections import Endpoint, MeshMultiZoneServiceRow
from xds_gateway.resources import (
    clusters,
    endpoints,
    listeners,
    names,
    outbound_policies,
    tls,
)
from xds_gateway.resources.cache import EncodedResource, ResourceCache
from xds_gateway.type_urls import CLUSTER, ENDPOINT
from xds_gateway.view import ProjectionView

__all__ = ["display_name", "explicit_target", "mzsvc_port"]


def display_name(row: MeshMultiZoneServiceRow) -> str:
    """The name it has on global (`kuma.io/display-name`), which its cluster and hostname use."""
    return row.labels.get("kuma.io/display-name", row.name)


def explicit_target(outbound: Outbound, rows: Mapping[str, MeshMultiZoneServiceRow]
                    ) -> tuple[MeshMultiZoneServiceRow, int] | None:
    """The MeshMultiZoneService and port an explicit outbound's `backendRef` (kind
    MeshMultiZoneService, by name) points at, if it exists: its `port`, or its only one."""
    ref = outbound.backend_ref
    if ref is None or ref.kind != "MeshMultiZoneService" or ref.name is None:
        return None
    row = rows.get(ref.name)
    if row is None:
        return None
    ports = [p.port for p in row.spec.ports]
    if ref.port is None:
        return (row, ports[0]) if len(ports) == 1 else None
    return (row, ref.port) if ref.port in ports else None


def mzsvc_port(view: ProjectionView, cache: ResourceCache, row: MeshMultiZoneServiceRow,
               port: int, add: Callable[[EncodedResource], None], *, mtls: bool = True,
               d: outbound_policies.Destination = outbound_policies.NO_POLICY) -> str:
    """Add the cluster of `row`'s `port` and its endpoints; return the cluster name. With the
    mesh's mTLS on (and `mtls`: not a proxyless gRPC client) the cluster originates it with
    Kuma's `mzms` SNI and accepts any workload of the mesh: its MeshServices may be several
    services. `d`: what the outbound policies give it (`outbound_policies.for_destination`)."""
    mesh, name = row.mesh, display_name(row)
    cname = names.mzsvc_cluster(mesh, name, port)
    protocol = listeners.port_protocol(row.spec.ports, port)
    h2, ci = protocol in listeners.HTTP2_PROTOCOLS, outbound_policies.cluster_inputs(d, protocol)
    if mtls and mesh in view.trust:
        sni = tls.sni(mesh, name, port, "mzms")
        add(cache.get(CLUSTER, cname, ("eds", mesh, None, sni, h2, *ci),
                      lambda: outbound_policies.policed_cluster(clusters.eds_cluster(
                          cname, tls.upstream_tls(mesh, None, sni), http2=h2), d, protocol)))
    else:
        add(cache.get(CLUSTER, cname, ("eds", h2, *ci), lambda: outbound_policies.policed_cluster(
            clusters.eds_cluster(cname, http2=h2), d, protocol)))
    groups: list[tuple[int, str, list[Endpoint]]] = []
    key: list[tuple[int, bytes, tuple[tuple[str, str | None], ...]]] = []
    for backend in row.backends:
        ep_row = view.endpoints.get(mesh, {}).get(backend.name)
        if ep_row is None:
            continue
        port_eps = endpoints.port_endpoints(ep_row, port)  # remote: through its ingresses
        if port_eps is None:
            continue  # Kuma: a MeshService without the port contributes nothing
        groups.append((backend.priority, ep_row.zone, port_eps.endpoints))
        key.append((backend.priority, view.endpoints_bytes[mesh][backend.name],
                    view.addresses.answers(("endpoints", mesh, backend.name))))
    add(cache.get(ENDPOINT, cname, ("mzsvc", port, tuple(key)),
                  lambda: endpoints.prioritized_load_assignment(cname, groups,
                                                                view.addresses.ip)))
    return cname
