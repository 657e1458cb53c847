"""What another control plane of a multi-zone deployment wrote, as this one's API shows it:
which read-model collections hold a kind's resources here, and the refusal of a write to a
synced one.

Kuma's global lists the Dataplanes its zones sync to it, under their synced names
(`<name>-<hash>`, labels `kuma.io/origin: zone`, `kuma.io/zone`, `kuma.io/display-name`); a
zone lists only its own, as Kuma syncs no Dataplane from zone to zone (only their
MeshServices and ZoneIngresses, reference/multizone.md §1). The fold keeps other zones'
Dataplanes in `remotedataplane` in every log (inputs of their MeshServices,
`projections.remote`), so global's API reads them there and a zone's does not.

A synced resource is read-only where it is synced to: it changes where it was written and
comes back through the sync. A write here would make another resource of the same name in
this control plane's subjects that the fold would fold over the synced one, so a PUT or DELETE
of one is refused (409) naming where to change it. Synced is what the row's `kuma.io/origin`
says: `zone` on global, `global` in a zone (Kuma's mappers relabel what they sync).
"""

from __future__ import annotations

from events import Conflict
from events.labels import DISPLAY_NAME_LABEL, ORIGIN_LABEL, ZONE_LABEL
from projections import DataplaneRow, MeshServiceRow, decode_row
from services.api._state import ApiRequest, api_state

__all__ = ["collections_of", "refuse_synced"]

_COLLECTION = {"Mesh": "mesh", "Dataplane": "dataplane", "MeshService": "meshservice",
               "HostnameGenerator": "hostnamegenerator",
               "MeshTrafficPermission": "meshtrafficpermission",
               "MeshMultiZoneService": "meshmultizoneservice",
               "ZoneIngress": "zoneingress"}
"""The read-model collection of each kind the API serves."""


def collections_of(request: ApiRequest, kind: str) -> tuple[str, ...]:
    """The read-model collections of the resources of `kind` this API shows: on global, the
    Dataplanes are the zones' (`remotedataplane`) beside any of its own (none: it refuses
    them)."""
    if kind == "Dataplane" and api_state(request.app).commands.deployment == "global":
        return ("dataplane", "remotedataplane")
    return (_COLLECTION[kind],)


async def refuse_synced(request: ApiRequest, kind: str, mesh: str, name: str) -> None:
    """Raise `Conflict` if `name` of `kind` in `mesh` is a Dataplane or MeshService another
    control plane wrote, synced to this one."""
    state = api_state(request.app)
    deployment = state.commands.deployment
    if deployment == "standalone":
        return
    match kind:
        case "Dataplane" if deployment == "global":
            collection = "remotedataplane"
        case "MeshService":
            collection = "meshservice"
        case _:
            return
    body = await state.store.get(collection, f"{mesh}/{name}")
    if body is None:
        return
    row = decode_row(collection, body)
    match row:
        case DataplaneRow(dataplane=dp):
            labels = dp.labels
        case MeshServiceRow():
            labels = row.labels
        case _:
            return
    synced_origin = "zone" if deployment == "global" else "global"
    if labels.get(ORIGIN_LABEL) != synced_origin or labels.get(ZONE_LABEL) == state.commands.zone:
        return
    zone = labels.get(ZONE_LABEL)
    subject = f"{kind.lower()}:{mesh}/{name}"
    if zone is None:
        raise Conflict(subject, 0, f"{kind} {name!r} of mesh {mesh!r} belongs to the global "
                       "control plane and is synced to this zone, read-only: change it on "
                       "global (`meshlog --api <global API> ...`)")
    display = labels.get(DISPLAY_NAME_LABEL, name)
    raise Conflict(subject, 0, f"{kind} {name!r} of mesh {mesh!r} is zone {zone!r}'s {kind} "
                   f"{display!r}, synced here under its synced name, read-only: change it on "
                   f"zone {zone!r}'s control plane (as {display!r})")
