"""Derived parts of a MeshService: endpoints per port, status, hostnames.

These are pure functions of the current state (no event order involved), so the projector
computes them once per batch for the services an event marked stale: the same rows come out
whatever the batch boundaries. The zone of a service's endpoints is the service's own
(`kuma.io/zone`, from the event that brought it or the Dataplane it was generated from).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from events import Dataplane, Inbound, MeshServicePort, rfc3339
from projections._match import dataplane_matches, inbound_matches
from projections._provenance import zone_of
from projections.generation import ports_of
from projections.hostnames import Assigned, assign_hostnames
from projections.identity import derive_identities
from projections.ipam import vip_of
from projections.multizone import derive_mmzs
from projections.remote import remote_zone_of
from projections.state import ProjectionState, ms_key
from projections.views import (
    Condition,
    DataplaneProxies,
    DataplaneRow,
    Endpoint,
    EndpointsRow,
    MeshServiceRow,
    MeshServiceStatus,
    PortEndpoints,
    Vip,
)
from projections.zoneingress import ingress_endpoints

__all__ = ["derive_stale", "inbound_serves", "is_healthy"]


def is_healthy(inbound: Inbound) -> bool:
    return inbound.state == "Ready" and (inbound.health is None or inbound.health.ready)


def inbound_serves(inbound: Inbound, port: MeshServicePort) -> bool:
    """Does `inbound` back `port` (targetPort by number, or by the inbound's name)?"""
    target = port.target_port if port.target_port is not None else port.port
    if isinstance(target, int):
        return inbound.port == target
    return inbound.name == target


def _endpoint_address(dp: Dataplane, inbound: Inbound) -> str:
    return dp.networking.advertised_address or inbound.address or dp.networking.address


def _port_conflicts(row: MeshServiceRow, selected: list[DataplaneRow]) -> list[Condition]:
    """Kuma only logs Dataplanes whose inbounds disagree with the generated ports; meshlog
    also says so in the status, naming them."""
    agree: list[DataplaneRow] = []
    others: list[str] = []
    for dp in selected:
        if ports_of(dp.dataplane, row.name) == row.spec.ports:
            agree.append(dp)
        else:
            others.append(dp.dataplane.name)
    if not others:
        return []
    shown = ", ".join(others[:10]) + (f" and {len(others) - 10} more" if len(others) > 10 else "")
    oldest = min(agree, key=lambda dp: (dp.first_seq, dp.dataplane.name), default=None)
    source = f"Dataplane {oldest.dataplane.name}" if oldest else "no Dataplane left"
    return [Condition(type="PortsConsistent", status="False", reason="PortConflict",
                      message=f"Dataplanes {shown} have other ports than the MeshService, "
                              f"which has those of {source} (the ports stay while a "
                              "Dataplane has them, else the oldest Dataplane's are taken)")]


def derive_stale(state: ProjectionState) -> None:
    """Recompute endpoints and status of every stale MeshService; clear the stale marks."""
    # Kuma's hostname generator runs in zones only: global's MeshServices get no hostnames
    hostnames = {mesh: assign_hostnames(state, mesh) for mesh in sorted(state.stale_hostnames)
                 if state.local_zone}
    for mesh, by_service in hostnames.items():
        # Only the services whose hostnames changed: any other input of a service's
        # endpoints and status marks it stale where it changes (the fold), so one that is
        # not marked and keeps its addresses would be derived to what it has. (All of them
        # were: one MeshService applied re-derived every service of its mesh, each batch.)
        for name, given in by_service.items():
            row = state.meshservice(mesh, name)
            if row is None or given != (row.status.addresses, row.status.hostname_generators):
                state.stale_services.add((mesh, name))
    for mesh, name in sorted(state.stale_services):
        row = state.meshservice(mesh, name)
        if row is None:
            continue
        assigned = hostnames.get(mesh)
        addresses = (assigned[name] if assigned is not None else
                     (row.status.addresses, row.status.hostname_generators))
        _derive_one(state, row, addresses)
    state.stale_services.clear()
    state.stale_hostnames.clear()
    derive_mmzs(state)  # after the MeshServices: it reads their rows
    derive_identities(state)


def _derive_one(state: ProjectionState, row: MeshServiceRow, addresses: Assigned) -> None:
    zone = remote_zone_of(state, row)
    if zone is not None:
        _derive_remote(state, row, zone, addresses)
        return
    selected = state.dataplanes_with_tags(row.mesh, row.spec.selector.dataplane_tags)
    tags = row.spec.selector.dataplane_tags
    ports = []
    healthy_dps = set()
    for port in row.spec.ports:
        endpoints = []
        for dp_row in selected:
            dp = dp_row.dataplane
            for inbound in dp.networking.inbound:
                if inbound.state == "Ignored" or not inbound_matches(inbound, tags):
                    continue
                if inbound_serves(inbound, port) and is_healthy(inbound):
                    healthy_dps.add(dp.name)
                    endpoints.append(Endpoint(address=_endpoint_address(dp, inbound),
                                              port=inbound.port, dataplane=dp.name))
        endpoints.sort(key=lambda e: (e.address, e.port, e.dataplane))
        ports.append(PortEndpoints(port=port, endpoints=endpoints))
    state.put("endpoints", ms_key(row.mesh, row.name),
              EndpointsRow(mesh=row.mesh, name=row.name, zone=zone_of(row.labels), ports=ports,
                           through_ingress=ingress_endpoints(state, row)))
    vip = vip_of(state, row.mesh, "MeshService", row.name)
    conditions = [] if vip is not None else [Condition(
        type="VIPAllocated", status="False", reason="Exhausted",
        message="no free address left in the MeshService CIDR")]
    if row.origin == "generated":
        conditions += _port_conflicts(row, selected)
    conditions += _expiring(row)
    status = MeshServiceStatus(
        state="Available" if healthy_dps else "Unavailable",
        vips=[Vip(ip=vip)] if vip is not None else [],
        addresses=addresses[0],
        hostname_generators=addresses[1],
        dataplane_proxies=DataplaneProxies(total=len(selected), healthy=len(healthy_dps)),
        conditions=conditions,
    )
    if status != row.status:
        state.put("meshservice", ms_key(row.mesh, row.name),
                  msgspec.structs.replace(row, status=status))


def _expiring(row: MeshServiceRow) -> list[Condition]:
    """A generated MeshService waiting out its grace period says until when (a remote one
    its zone's: `projections.remote`)."""
    if row.expires_at is None:
        return []
    return [Condition(
        type="Expiring", status="True", reason="NoDataplanes",
        message=f"no Dataplane is left for it: it goes at {rfc3339(row.expires_at)} (grace "
                "period) unless a Dataplane of its service comes back before")]


def _derive_remote(state: ProjectionState, row: MeshServiceRow, zone: str,
                   addresses: Assigned) -> None:
    """A MeshService of another zone (`projections.remote`): availability from that zone's
    Dataplanes it selects, kept in `spec.state` as Kuma syncs it; never its Dataplanes'
    addresses as endpoints: it is reached through its zone's ingresses (with mTLS)."""
    tags = row.spec.selector.dataplane_tags
    selected = [r for r in state.remote_dataplanes(row.mesh, zone)
                if dataplane_matches(r.dataplane, tags)]
    healthy = [r for r in selected if any(
        is_healthy(i) and inbound_matches(i, tags) for i in r.dataplane.networking.inbound
        if i.state != "Ignored")]
    state.put("endpoints", ms_key(row.mesh, row.name), EndpointsRow(
        mesh=row.mesh, name=row.name, zone=zone,
        ports=[PortEndpoints(port=port, endpoints=[]) for port in row.spec.ports],
        through_ingress=ingress_endpoints(state, row)))
    available: Literal["Available", "Unavailable"] = "Available" if healthy else "Unavailable"
    vip = vip_of(state, row.mesh, "MeshService", row.name)
    conditions = [] if vip is not None or not state.local_zone else [Condition(
        type="VIPAllocated", status="False", reason="Exhausted",
        message="no free address left in the MeshService CIDR")]
    conditions += _expiring(row)
    status = MeshServiceStatus(
        state=available, vips=[Vip(ip=vip)] if vip is not None else [],
        addresses=addresses[0], hostname_generators=addresses[1],
        dataplane_proxies=DataplaneProxies(total=len(selected), healthy=len(healthy)),
        conditions=conditions)
    spec = msgspec.structs.replace(row.spec, state=available)
    if status != row.status or spec != row.spec:
        state.put("meshservice", ms_key(row.mesh, row.name),
                  msgspec.structs.replace(row, spec=spec, status=status))
