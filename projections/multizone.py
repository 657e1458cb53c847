"""MeshMultiZoneServices in the fold: their rows, VIPs, hostnames and status.

Kuma (reference/multizone.md §2) derives a MeshMultiZoneService's status on each zone control
plane with a 5 s ticker; here the fold derives it as events arrive, like a MeshService's
(`projections.derive`): an event marks the meshes whose MeshMultiZoneServices may change
(`ProjectionState.stale_mmzs`: one of them was applied or deleted, a MeshService came, went
or changed its labels or `spec.state`, a HostnameGenerator changed), and `derive_mmzs`
recomputes them once per batch, a pure function of the rows, so batch boundaries never change
the result (DESIGN.md invariant 4).

- VIP: sticky, from the MeshMultiZoneService CIDR (243.0.0.0/8 unless `IpamConfigured` says
  otherwise), allocated when the resource is applied (`projections.ipam`).
- Hostnames: from generators with a `selector.meshMultiZoneService`
  (`synced-mesh-multi-zone-service`: `{{ .DisplayName }}.mzsvc.mesh.local`).
- `status.meshServices`: every MeshService of the mesh carrying all `matchLabels`, local and
  remote, as Kuma names them (display name, namespace, zone, mesh), sorted by those; the
  condition `MeshServicesMatched` (True/MatchesFound or False/NoMatchesFound).
- `backends`: which of them serve from this control plane's point of view (Kuma's
  `fillMeshMultiZoneServices`): every local one at priority 0; a remote one (its
  `kuma.io/zone` neither empty nor `ProjectionState.local_zone`) at priority 1, only when its
  `spec.state` is Available. A gateway builds the endpoints from the MeshServices' own.
"""

from __future__ import annotations

import msgspec

from events import MeshMultiZoneService, Provenance
from projections._provenance import provenance_labels, zone_of
from projections.hostnames import Assigned, assign_mmzs_hostnames
from projections.ipam import allocate_vip, vip_of
from projections.state import ProjectionState, dp_key
from projections.views import (
    Condition,
    MatchedMeshService,
    MeshMultiZoneServiceRow,
    MeshMultiZoneServiceStatus,
    MeshServiceRow,
    MzsBackend,
    RowMeta,
    Vip,
)

__all__ = [
    "KIND", "derive_mmzs", "generators_changed", "mmzs_applied", "mmzs_deleted", "mmzs_of",
    "retry_vips",
]

KIND = "MeshMultiZoneService"
_COLLECTION = "meshmultizoneservice"
_NAMESPACE_LABEL = "k8s.kuma.io/namespace"
_DISPLAY_NAME = "kuma.io/display-name"


def mmzs_of(state: ProjectionState, mesh: str) -> list[MeshMultiZoneServiceRow]:
    """`mesh`'s MeshMultiZoneServices, by name."""
    prefix = dp_key(mesh, "")
    rows = state.rows[_COLLECTION]
    return [row for key in sorted(k for k in rows if k.startswith(prefix))
            if isinstance(row := rows[key], MeshMultiZoneServiceRow)]


def mmzs_applied(state: ProjectionState, mmzs: MeshMultiZoneService, provenance: Provenance,
                 meta: RowMeta) -> None:
    """A MeshMultiZoneService created or changed: its row with Kuma's computed labels (the
    control plane's win over the user's), a VIP, and its mesh to derive again."""
    key = dp_key(mmzs.mesh, mmzs.name)
    old = state.get(_COLLECTION, key)
    previous = old if isinstance(old, MeshMultiZoneServiceRow) else None
    state.put(_COLLECTION, key, MeshMultiZoneServiceRow(
        mesh=mmzs.mesh, name=mmzs.name,
        labels={_DISPLAY_NAME: mmzs.name, **mmzs.labels, "kuma.io/mesh": mmzs.mesh,
                **provenance_labels(provenance)},
        spec=mmzs.spec,
        status=previous.status if previous is not None else MeshMultiZoneServiceStatus(),
        meta=meta, backends=previous.backends if previous is not None else []))
    allocate_vip(state, mmzs.mesh, KIND, mmzs.name)
    state.stale_mmzs.add(mmzs.mesh)


def mmzs_deleted(state: ProjectionState, mesh: str, name: str) -> None:
    """The row goes; its VIP stays reserved for it (invariant 6). Other MeshMultiZoneServices
    of the mesh may get the hostname it held."""
    state.delete(_COLLECTION, dp_key(mesh, name))
    state.stale_mmzs.add(mesh)


def generators_changed(state: ProjectionState) -> None:
    """A HostnameGenerator came, went or changed: every mesh's hostnames may move."""
    state.stale_mmzs.update(key.partition("/")[0] for key in state.rows[_COLLECTION])


def retry_vips(state: ProjectionState) -> None:
    """After a change of the CIDR: the MeshMultiZoneServices left without a VIP (the old one
    was exhausted) try the new one, in key order so that a replay hands out the same ones."""
    for key in sorted(state.rows[_COLLECTION]):
        row = state.rows[_COLLECTION][key]
        if (isinstance(row, MeshMultiZoneServiceRow) and not row.status.vips
                and allocate_vip(state, row.mesh, KIND, row.name) is not None):
            state.stale_mmzs.add(row.mesh)


def derive_mmzs(state: ProjectionState) -> None:
    """Recompute the MeshMultiZoneServices of every stale mesh; clear the marks."""
    for mesh in sorted(state.stale_mmzs):
        rows = mmzs_of(state, mesh)
        if not rows:
            continue
        hostnames = assign_mmzs_hostnames(state, rows)
        services = list(state.meshservices_of(mesh))
        for row in rows:
            _derive_one(state, row, services, hostnames[row.name])
    state.stale_mmzs.clear()


def _matches(row: MeshMultiZoneServiceRow, ms: MeshServiceRow) -> bool:
    """Kuma's `matchesService`: every label of the selector, on the MeshService's labels."""
    return all(ms.labels.get(k) == v
               for k, v in row.spec.selector.mesh_service.match_labels.items())


def _matched(ms: MeshServiceRow) -> MatchedMeshService:
    return MatchedMeshService(name=ms.labels.get(_DISPLAY_NAME, ms.name),
                              namespace=ms.labels.get(_NAMESPACE_LABEL, ""),
                              zone=zone_of(ms.labels), mesh=ms.mesh)


def _backend(state: ProjectionState, ms: MeshServiceRow) -> MzsBackend | None:
    zone = zone_of(ms.labels)
    if not zone or zone == state.local_zone:
        return MzsBackend(name=ms.name, zone=zone, priority=0)
    if ms.spec.state == "Available":
        return MzsBackend(name=ms.name, zone=zone, priority=1)
    return None  # a remote service that is not (known to be) available serves nothing


def _derive_one(state: ProjectionState, row: MeshMultiZoneServiceRow,
                services: list[MeshServiceRow], addresses: Assigned) -> None:
    matched = [ms for ms in services if _matches(row, ms)]
    shown = sorted((_matched(ms) for ms in matched),
                   key=lambda m: (m.name, m.namespace, m.zone, m.mesh))
    backends = sorted((b for ms in matched if (b := _backend(state, ms)) is not None),
                      key=lambda b: (b.priority, b.zone, b.name))
    conditions = [Condition(type="MeshServicesMatched", status="True", reason="MatchesFound",
                            message=f"Matched {len(shown)} MeshService(s)") if shown else
                  Condition(type="MeshServicesMatched", status="False",
                            reason="NoMatchesFound",
                            message="Selector does not match any MeshService in this zone")]
    vip = vip_of(state, row.mesh, KIND, row.name)
    if vip is None:
        conditions.append(Condition(type="VIPAllocated", status="False", reason="Exhausted",
                                    message="no free address left in the "
                                            "MeshMultiZoneService CIDR"))
    status = MeshMultiZoneServiceStatus(
        addresses=addresses[0], vips=[Vip(ip=vip)] if vip is not None else [],
        mesh_services=shown, hostname_generators=addresses[1], conditions=conditions)
    if status != row.status or backends != row.backends:
        state.put(_COLLECTION, dp_key(row.mesh, row.name),
                  msgspec.structs.replace(row, status=status, backends=backends))
