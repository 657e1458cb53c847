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

from collections.abc import Mapping

from events import Conflict
from events.labels import DISPLAY_NAME_LABEL, ORIGIN_LABEL, ZONE_LABEL
from projections import DataplaneRow, MeshServiceRow, decode_row, decode_typed
from services.api._state import ApiRequest, api_state

__all__ = ["collections_of", "refuse_synced", "synced", "synced_dataplane", "synced_insight"]

def collections_of(request: ApiRequest, kind: str) -> tuple[str, ...]:
    """The read-model collections of the resources of `kind` this API shows: on global, the
    Dataplanes are the zones' (`remotedataplane`) beside any of its own (none: it refuses
    them)."""
    if kind == "Dataplane" and api_state(request.app).commands.deployment == "global":
        return ("dataplane", "remotedataplane")
    return (kind.lower(),)  # each kind's collection (projections.COLLECTIONS)


def synced(request: ApiRequest, labels: Mapping[str, str]) -> bool:
    """Do `labels` say another control plane wrote the resource, synced to this one?"""
    commands = api_state(request.app).commands
    if commands.deployment == "standalone":
        return False
    origin = "zone" if commands.deployment == "global" else "global"
    return labels.get(ORIGIN_LABEL) == origin and labels.get(ZONE_LABEL) != commands.zone


def synced_insight(request: ApiRequest, labels: Mapping[str, str]) -> dict[str, str] | None:
    """What global's `dataplanes+insights` shows of a zone's Dataplane (`labels`): its proxy's
    insight stays in its zone (DataplaneInsights are not synced yet). None: not synced."""
    if not synced(request, labels):
        return None
    zone = labels.get(ZONE_LABEL)
    return {"unavailable": f"the insight of zone {zone!r}'s proxy is not synced to global: "
                           f"see it on zone {zone!r}'s control plane"}


async def synced_dataplane(request: ApiRequest, mesh: str, name: str) -> DataplaneRow | None:
    """On global, the zone's Dataplane synced as `name` of `mesh`; None elsewhere."""
    state = api_state(request.app)
    if state.commands.deployment != "global":
        return None
    body = await state.store.get("remotedataplane", f"{mesh}/{name}")
    return decode_typed(DataplaneRow, body) if body is not None else None


async def refuse_synced(request: ApiRequest, kind: str, mesh: str, name: str) -> None:
    """Raise `Conflict` if `name` of `kind` in `mesh` is a Dataplane or MeshService another
    control plane wrote, synced to this one."""
    state = api_state(request.app)
    deployment = state.commands.deployment
    match kind:
        case _ if deployment == "standalone":
            return  # nothing is synced to it
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
    if not synced(request, labels):
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
