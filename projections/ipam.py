"""Sticky VIP allocation (DESIGN.md invariant 6; Kuma's IPAM with meshlog's improvements).

A (mesh, kind, name) keeps its VIP for life, also across delete and re-create: the `vip`
rows are never deleted. New VIPs come next-fit from the kind's CIDR, skipping the network
and broadcast addresses and every address ever handed out. The CIDR comes from the log
(`IpamConfigured`); changing it moves no existing VIP. Exhaustion returns None: the caller
turns it into a status condition.
"""

from __future__ import annotations

import ipaddress

from projections.state import ProjectionState
from projections.views import IpamRow, VipRow

__all__ = ["DEFAULT_CIDRS", "allocate_vip", "configure_cidr", "vip_of"]

DEFAULT_CIDRS = {
    "MeshService": "241.0.0.0/8",
    "MeshExternalService": "242.0.0.0/8",
    "MeshMultiZoneService": "243.0.0.0/8",
}


def _vip_key(mesh: str, kind: str, name: str) -> str:
    return f"{mesh}/{kind}/{name}"


def vip_of(state: ProjectionState, mesh: str, kind: str, name: str) -> str | None:
    row = state.get("vip", _vip_key(mesh, kind, name))
    return row.ip if isinstance(row, VipRow) else None


def configure_cidr(state: ProjectionState, kind: str, cidr: str) -> None:
    current = state.get("ipam", kind)
    if isinstance(current, IpamRow) and current.cidr == cidr:
        return
    state.put("ipam", kind, IpamRow(kind=kind, cidr=cidr, next_offset=1))


def allocate_vip(state: ProjectionState, mesh: str, kind: str, name: str) -> str | None:
    """The sticky VIP of (mesh, kind, name), allocating one if it has none."""
    existing = vip_of(state, mesh, kind, name)
    if existing is not None:
        return existing
    row = state.get("ipam", kind)
    if not isinstance(row, IpamRow):
        row = IpamRow(kind=kind, cidr=DEFAULT_CIDRS[kind], next_offset=1)
    network = ipaddress.ip_network(row.cidr, strict=False)
    first, last = _usable_range(network)
    span = last - first + 1
    start = min(max(row.next_offset, first), last)
    for step in range(span):
        offset = first + (start - first + step) % span
        ip = str(network.network_address + offset)
        if ip not in state.used_vips:
            state.put("vip", _vip_key(mesh, kind, name), VipRow(ip=ip))
            state.put("ipam", kind, IpamRow(kind=kind, cidr=row.cidr, next_offset=offset + 1))
            return ip
    return None


def _usable_range(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int]:
    """Offsets from the network address that may be handed out."""
    size = network.num_addresses
    if size <= 2:
        return 0, size - 1
    return 1, size - 2
