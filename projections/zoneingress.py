"""ZoneIngresses in the fold, and the endpoints a remote MeshService is reached at.

Kuma (reference/multizone.md §3, `K:pkg/xds/topology/outbound.go` fillRemoteMeshServices):
in a zone, a MeshService of another zone is reached through that zone's ingresses, one
endpoint per distinct `advertisedAddress:advertisedPort` (an ingress without both is
skipped), and only when the mesh has mTLS on: the ingress routes by the SNI the client's
mTLS carries. meshlog derives that per batch, like the rest of a MeshService
(`projections.derive`): `EndpointsRow.through_ingress` of a remote MeshService, a pure
function of the ingress rows, the mesh's trust row and the MeshService's zone, so batch
boundaries never change it (DESIGN.md invariant 4).

A ZoneIngress row's `zone` is pinned to the zone that wrote its event (its provenance), as
Kuma's global pins it; one written by global has none and routes nothing. Its labels are the
control plane's (`kuma.io/origin`, `kuma.io/zone`, `kuma.io/env`) and `kuma.io/display-name`,
its name in its zone (as a Dataplane's), which another log's synced name hides.
"""

from __future__ import annotations

import msgspec

from events import Provenance, ZoneIngress
from events.labels import DISPLAY_NAME_LABEL
from projections._provenance import provenance_labels, zone_of
from projections.state import ProjectionState
from projections.views import Endpoint, MeshServiceRow, RowMeta, ZoneIngressRow

__all__ = ["ingress_deleted", "ingress_endpoints", "ingress_registered", "ingress_row",
           "is_remote", "remote_services_changed"]

_COLLECTION = "zoneingress"


def is_remote(state: ProjectionState, ms: MeshServiceRow) -> bool:
    """Whether `ms` is another zone's, seen from the zone whose log `state` folds."""
    zone = zone_of(ms.labels)
    return bool(zone) and zone != state.local_zone


def ingress_row(ingress: ZoneIngress, provenance: Provenance, meta: RowMeta, *,
                synced: bool = False) -> ZoneIngressRow:
    """The row of `ingress`, registered by the control plane of `provenance`: its zone pinned
    to that one, its labels that control plane's."""
    # its name in its zone unless the user gave one (another zone's: the caller's, before
    # the synced name), as a Dataplane's: what global's API finds its zone's insight by
    pinned = msgspec.structs.replace(
        ingress, zone=provenance.zone or None,
        labels={DISPLAY_NAME_LABEL: ingress.name, **ingress.labels,
                **provenance_labels(provenance)})
    return ZoneIngressRow(zoneingress=pinned, meta=meta, synced=synced)


def ingress_registered(state: ProjectionState, ingress: ZoneIngress, provenance: Provenance,
                       meta: RowMeta, *, synced: bool = False) -> None:
    old = state.get(_COLLECTION, ingress.name)
    row = ingress_row(ingress, provenance, meta, synced=synced)
    state.put(_COLLECTION, ingress.name, row)
    zones = {row.zoneingress.zone or ""}
    if isinstance(old, ZoneIngressRow):
        zones.add(old.zoneingress.zone or "")
    remote_services_changed(state, zones=zones)


def ingress_deleted(state: ProjectionState, name: str) -> None:
    old = state.get(_COLLECTION, name)
    state.delete(_COLLECTION, name)
    if isinstance(old, ZoneIngressRow):
        remote_services_changed(state, zones={old.zoneingress.zone or ""})


def remote_services_changed(state: ProjectionState, *, zones: set[str] | None = None,
                            mesh: str | None = None) -> None:
    """Mark the remote MeshServices of `zones` (all zones: None), in `mesh` (all: None), to
    be derived again: their ingresses, or their mesh's mTLS, changed."""
    for ms in state.meshservices() if mesh is None else state.meshservices_of(mesh):
        if is_remote(state, ms) and (zones is None or zone_of(ms.labels) in zones):
            state.stale_services.add((ms.mesh, ms.name))


def ingress_endpoints(state: ProjectionState, ms: MeshServiceRow) -> list[Endpoint] | None:
    """How this zone reaches `ms`: None for a local MeshService, or a remote one while its
    mesh has no mTLS (Kuma then gives it no endpoints at all; meshlog leaves it its own,
    which only a log that holds that zone's Dataplanes has); otherwise the advertised
    address:port of each ingress of its zone, once each, sorted."""
    if not is_remote(state, ms) or state.trust(ms.mesh) is None:
        return None
    zone = zone_of(ms.labels)
    seen: dict[tuple[str, int], str] = {}
    for name in sorted(state.rows[_COLLECTION]):
        row = state.rows[_COLLECTION][name]
        if not isinstance(row, ZoneIngressRow) or row.zoneingress.zone != zone:
            continue
        net = row.zoneingress.networking
        if net.advertised_address is None or net.advertised_port is None:
            continue
        seen.setdefault((net.advertised_address, net.advertised_port), name)
    return [Endpoint(address=a, port=p, dataplane=n) for (a, p), n in sorted(seen.items())]
