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
this control plane's subjects that the fold keeps under the synced one's key: a PUT would
replace the synced one in this control plane's view (global's MeshTrafficPermission, its
allow rule with it), a later DELETE remove it, until its origin writes it again. So a PUT or
DELETE of any kind is refused (409) naming where to change it. The command path decides it
from the log (`events.commands.synced`: the other control plane's subject of that name holds
a live record), whatever the fold has reached; `refuse_synced` refuses early, before the
body is read, when the row this API shows under that name is synced (`synced`, from its
`kuma.io/origin` and `kuma.io/zone`: `zone` on global; in a zone, `global` or another
zone's), with the log's words if the log says so too, else its own: the read model still
knows what the log alone does not (a zone's generated MeshService waiting out its grace
period, a synced name whose display name was cut).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, assert_never

from events import Conflict, EventLogUnavailable
from events.commands.synced import display_name_of
from events.kds_hash import hashed_name
from events.labels import DISPLAY_NAME_LABEL, ORIGIN_LABEL, ZONE_LABEL
from projections import (
    DataplaneRow,
    HostnameGeneratorRow,
    MeshMultiZoneServiceRow,
    MeshRow,
    MeshServiceRow,
    PolicyRow,
    ZoneIngressRow,
    decode_row,
    decode_typed,
)
from services.api._state import ApiRequest, api_state

__all__ = ["collections_of", "labels_of", "name_in_zone", "refuse_synced", "synced",
           "synced_dataplane", "synced_proxy"]


def collections_of(request: ApiRequest, kind: str) -> tuple[str, ...]:
    """The read-model collections of the resources of `kind` this API shows: on global, the
    Dataplanes are the zones' (`remotedataplane`) beside any of its own (`dataplane`). Global
    refuses Dataplanes (its API, and its xDS gateway's self-registration), but a log an earlier
    release wrote may hold proxies registered on global, which the fold keeps in `dataplane`:
    hence both are read, so what global's log holds is what its API shows."""
    if kind == "Dataplane" and api_state(request.app).commands.deployment == "global":
        return ("dataplane", "remotedataplane")
    return (kind.lower(),)  # each kind's collection (projections.COLLECTIONS)


def synced(request: ApiRequest, labels: Mapping[str, str]) -> bool:
    """Do `labels` say another control plane wrote the resource, synced to this one? On
    global, a zone's (`kuma.io/origin: zone`). In a zone, global's (`kuma.io/origin: global`,
    no `kuma.io/zone`) and another zone's: its MeshService relabelled `global` as Kuma's
    global-to-zone sync does, its ZoneIngress still `zone`; either way `kuma.io/zone` is not
    this zone."""
    commands = api_state(request.app).commands
    origin = labels.get(ORIGIN_LABEL)
    match commands.deployment:
        case "standalone":
            return False
        case "global":
            return origin == "zone"
        case "zone":
            return origin in ("global", "zone") and labels.get(ZONE_LABEL) != commands.zone
        case _:
            assert_never(commands.deployment)


def synced_proxy(request: ApiRequest, doc: Mapping[str, Any]) -> tuple[str, str] | None:
    """On global, the (zone, name in the zone) of a zone's Dataplane or ZoneIngress (`doc`,
    rendered), whose proxy's insight global has from that zone under that name
    (services.api._zone_insights). None: not synced, or not on global (a zone holds no other
    zone's insights)."""
    labels: Mapping[str, str] = doc.get("labels", {})
    if api_state(request.app).commands.deployment != "global" or not synced(request, labels):
        return None
    return labels.get(ZONE_LABEL, ""), name_in_zone(doc["name"], doc.get("mesh", ""), labels)


def name_in_zone(name: str, mesh: str, labels: Mapping[str, str]) -> str:
    """The name in its zone of a zone's Dataplane (of `mesh`) or ZoneIngress (`mesh` "")
    synced here as `name`, with `labels`: the name its synced name was made from (the fold
    hashes the zone's name, `projections.remote`), which is what its zone's gateways key its
    proxy's insight by. Not `kuma.io/display-name`: a user label may set another one. That
    label only for a name not of that shape (a display name cut at 236 characters)."""
    zone = labels.get(ZONE_LABEL, "")
    display = display_name_of(name)
    if display is not None and hashed_name(mesh, display, zone) == name:
        return display
    return labels.get(DISPLAY_NAME_LABEL, "")


async def synced_dataplane(request: ApiRequest, mesh: str, name: str) -> DataplaneRow | None:
    """On global, the zone's Dataplane synced as `name` of `mesh`; None elsewhere."""
    state = api_state(request.app)
    if state.commands.deployment != "global":
        return None
    body = await state.store.get("remotedataplane", f"{mesh}/{name}")
    return decode_typed(DataplaneRow, body) if body is not None else None


def labels_of(row: object) -> dict[str, str]:
    """The labels of a resource row, the control plane's among them (`kuma.io/origin`,
    `kuma.io/zone`); {} for a row that is no resource."""
    match row:
        case (MeshRow(mesh=resource) | DataplaneRow(dataplane=resource)
              | HostnameGeneratorRow(generator=resource)
              | PolicyRow(policy=resource)
              | ZoneIngressRow(zoneingress=resource)):
            return resource.labels
        case MeshServiceRow(labels=labels) | MeshMultiZoneServiceRow(labels=labels):
            return labels
        case _:
            return {}


async def refuse_synced(request: ApiRequest, kind: str, mesh: str | None, name: str) -> None:
    """Raise `Conflict` if `name` of `kind` (in `mesh`; None for a kind of no mesh) is a
    resource another control plane wrote, synced to this one: a Dataplane, MeshService or
    ZoneIngress of a zone, or in a zone global's HostnameGenerator, policy or
    MeshMultiZoneService. Whatever the kind, the row this API would show under that name
    says (its labels), as a GET shows it; the command path then decides from the log
    (`events.commands.synced`), which also refuses what the fold has not reached yet."""
    state = api_state(request.app)
    if state.commands.deployment == "standalone":
        return  # nothing is synced to it
    key = name if mesh is None else f"{mesh}/{name}"
    for collection in collections_of(request, kind):
        body = await state.store.get(collection, key)
        if body is not None:
            labels = labels_of(decode_row(collection, body))
            break
    else:
        return
    if not synced(request, labels):
        return
    with contextlib.suppress(EventLogUnavailable):  # the read model decided: a 409 whatever
        await state.commands.synced.refuse(kind, mesh, name)  # the log's words, display names
    zone = labels.get(ZONE_LABEL)
    subject = f"{kind.lower()}:{key}"
    where = f" of mesh {mesh!r}" if mesh is not None else ""
    if zone is None:
        raise Conflict(subject, 0, f"{kind} {name!r}{where} is synced from the global control "
                       "plane, read-only in this zone: change it on global (`meshlog --api "
                       "<global API> ...`)")
    display = labels.get(DISPLAY_NAME_LABEL)  # none on rows of fold versions before 6
    theirs, there = (f" {display!r}", f" (as {display!r})") if display else ("", "")
    raise Conflict(subject, 0, f"{kind} {name!r}{where} is zone {zone!r}'s {kind}{theirs}, "
                   "synced here under its synced name, read-only: change it on zone "
                   f"{zone!r}'s control plane{there}")
