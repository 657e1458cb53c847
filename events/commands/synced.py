"""Read-only synced resources, decided from the log: a write here to a resource another
control plane wrote and the sync brought to this one is refused (409, naming where to change
it).

A synced resource lives on its writer's subjects (`events.subjects`: the zone token is who
wrote it), and the fold keeps it under the key a resource of this control plane of that name
would have: a PUT here would replace it in this control plane's view (global's
MeshTrafficPermission, its allow rule with it), a DELETE then remove it, until its origin
writes it again. So "is it synced here?" is "does the other control plane's subject for this
name hold a live last record", which a consistent read of that subject answers
(`CommandHandler.current`: the stream leader's last record, every acknowledged write in it),
whatever the fold has reached. The candidates, per kind (reference/multizone.md §1):

- in a zone, global's own subject of the same name, for the kinds global writes (Mesh,
  MeshMultiZoneService, MeshService, HostnameGenerator, MeshTrafficPermission; Kuma's
  global-to-zone sync keeps names): one read;
- a name of the shape Kuma gives a zone's resource outside its zone (`<display>-<hash>`,
  `events.kds_hash`): on global a zone's Dataplane, MeshService or ZoneIngress, in a zone
  another zone's MeshService or ZoneIngress (Kuma syncs no Dataplane zone to zone; this
  control plane keeps them apart, never under a local key). The hash names its zone only
  against a list of zones, so the registered ones are read (global's zone subjects, in every
  log; a zone's events reach a log only through a source its registration made), and the
  zone whose hash gives the name is read: its subject of the display name, and for a
  MeshService with none, its Dataplanes of that mesh (Kuma syncs the MeshService the zone
  generated from their inbounds; this control plane generates it again, `projections.remote`).
  A name without that shape costs no read.

So a write costs at most one read in a zone, and a name of the synced shape a few more: the
zone list, the zone's subject, and for a MeshService its zone's Dataplanes (all of that
zone's in the mesh, one consumer read: paid only by a name that is the synced name of a
zone's service, which only an authenticated writer can send). Each read fails as the
write's own does (`EventLogUnavailable`, a 503), and a record this release cannot read
(a newer release's, as while global is upgraded first) refuses the write (409, saying to
upgrade): a write is never let through unchecked. What the log alone cannot say is left to
the read model (the API's
`services.api._synced`): a generated MeshService of another zone waiting out its grace period
(its Dataplanes gone; when it goes depends on this log's fold), a display name longer than the
236 characters a synced name keeps of it.

A resource this control plane wrote under a name another control plane later writes too is
shown as the later one's (the fold keeps one row per key), as Kuma's sync overwrites the
zone's resource of that name: it is then refused like any synced one. When the other one is
deleted the row goes, this control plane's own included (Kuma's sync deletes what it
overwrote); applied again, it is written again, not taken as unchanged (`refuse` returns the
sequence it must be newer than).
"""

from __future__ import annotations

import re

from events.commands._live import live_resource
from events.commands.handler import CommandHandler, Current, current_of
from events.commands.zones import zones_filter
from events.errors import Conflict, WrongControlPlane
from events.event_types import ZoneApplied
from events.kds_hash import MAX_DISPLAY_NAME, hashed_name
from events.resources import Dataplane
from events.subjects import GLOBAL_ZONE, resource_subject, resources_filter
from events.validation import SERVICE_TAG, is_dns1035_label

__all__ = ["SyncedGuard", "display_name_of"]

_GLOBALS_NOT = frozenset({"Dataplane", "ZoneIngress"})
"""Kinds global never writes (it refuses them): in a zone no global subject to read."""
_ZONE_SYNCED = frozenset({"Dataplane", "MeshService", "ZoneIngress"})
"""Kinds a zone's control plane syncs under hashed names (Kuma's ZoneToGlobal kinds)."""
_HASHED = re.compile(r"(.+)-([bcdfghjklmnpqrstvwxz2456789]{16})")
"""`<display>-<hash>`, `events.kds_hash.hashed_name`'s shape."""


def display_name_of(name: str) -> str | None:
    """The display name a synced name `name` was made from, if `name` has that shape and
    keeps the whole display name (one of 236 characters may have been cut); else None."""
    match = _HASHED.fullmatch(name)
    if match is None or len(match.group(1)) >= MAX_DISPLAY_NAME:
        return None
    return match.group(1)


class SyncedGuard:
    """The refusal of writes to synced resources, for one control plane."""

    def __init__(self, handler: CommandHandler, *, zone: str, deployment: str) -> None:
        """`zone`: the zone this control plane writes as (`GLOBAL_ZONE` on global);
        `deployment`: standalone, global or zone (nothing is synced to a standalone one)."""
        self._handler = handler
        self._zone = zone
        self._deployment = deployment

    async def refuse(self, kind: str, mesh: str | None, name: str) -> int:
        """Raise `Conflict` if `name` of `kind` (in `mesh`; None for a kind of no mesh) is a
        live resource of another control plane synced to this one, naming where to change
        it. Otherwise the last sequence of the other control planes' subjects read (0: none):
        a write of this control plane's own must be newer than it to show. Raises
        `EventLogUnavailable` when a read fails."""
        if self._deployment not in ("global", "zone"):
            return 0
        where = f" of mesh {mesh!r}" if mesh is not None else ""
        shadow = 0
        if self._deployment == "zone" and kind not in _GLOBALS_NOT:
            subject = resource_subject(kind, mesh, name, GLOBAL_ZONE)
            current = await self._handler.current(subject)
            _readable(current, subject)
            if live_resource(current.event) is not None:
                raise WrongControlPlane(
                    _refused(kind, mesh, name), f"{kind} {name!r}{where} is synced from the "
                    "global control plane, read-only in this zone: change it on global "
                    "(`meshlog --api <global API> ...`)")
            shadow = current.seq
        if kind not in _ZONE_SYNCED or (kind == "Dataplane" and self._deployment != "global"):
            return shadow
        display = display_name_of(name)
        if display is None:
            return shadow
        for zone in await self._zones():
            if zone == self._zone or hashed_name(mesh or "", display, zone) != name:
                continue
            subject = resource_subject(kind, mesh, display, zone)
            current = await self._handler.current(subject)
            _readable(current, subject)
            shadow = max(shadow, current.seq)
            if live_resource(current.event) is not None or (
                    kind == "MeshService" and mesh is not None
                    and await self._generated(mesh, display, zone)):
                raise WrongControlPlane(
                    _refused(kind, mesh, name), f"{kind} {name!r}{where} is zone {zone!r}'s "
                    f"{kind} {display!r}, synced here under its synced name, read-only: change "
                    f"it on zone {zone!r}'s control plane (as {display!r})")
        return shadow

    async def _zones(self) -> list[str]:
        """The zones registered in the log (disabled ones too: theirs are hidden, not gone,
        and come back when enabled; not the deleted: theirs are gone)."""
        zones = []
        for record in await self._handler.log.latest(zones_filter()):
            event = current_of(record).event
            if isinstance(event, ZoneApplied):
                zones.append(event.name)
            elif event is None:  # a newer release's record: the zone may be registered
                zones.append(record.subject.rpartition(".")[2])  # a zone name has no dots
        return zones

    async def _generated(self, mesh: str, display: str, zone: str) -> bool:
        """Does a live Dataplane of `zone` in `mesh` have an inbound of service `display`
        (from which its zone generates MeshService `display`)?"""
        if not is_dns1035_label(display):
            return False  # no MeshService is generated for it (`projections.generation`)
        for record in await self._handler.log.latest(resources_filter("Dataplane", mesh, zone)):
            current = current_of(record)
            _readable(current, record.subject)
            dataplane = live_resource(current.event)
            if isinstance(dataplane, Dataplane) and any(
                    i.tags.get(SERVICE_TAG) == display for i in dataplane.networking.inbound):
                return True
        return False


def _readable(current: Current, subject: str) -> None:
    """A record this release cannot read (a newer release's event, as during an upgrade that
    takes global first) may be a live resource: refuse the write rather than let it shadow
    one (`UndecodableEvent` is taken as nothing by `current_of`)."""
    if current.seq > 0 and current.event is None:
        raise Conflict(subject, current.seq, f"sequence {current.seq} of {subject} cannot be "
                       "read by this release (written by a newer one?), so whether it is a "
                       "synced resource of that name is not known here: upgrade this control "
                       "plane, then write again")


def _refused(kind: str, mesh: str | None, name: str) -> str:
    """What a refusal names: `<kind>:<mesh>/<name>`, as the API's read-model refusal does."""
    return f"{kind.lower()}:{name if mesh is None else f'{mesh}/{name}'}"
