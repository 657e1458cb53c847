"""What other zones wrote: their Dataplanes and MeshServices, seen from this control plane.

A zone's log holds, through JetStream sources, what global wrote and what every other zone
wrote (`meshlog.ev.<zone>.>` whole); global's log holds what every zone wrote. The fold
tells local from remote by the event's own zone (`events.provenance_of`) against the log's
`ProjectionState.local_zone` ("" on global, so every zone is remote there).

Remote resources are named as Kuma names synced ones (`events.kds_hash.hashed_name`:
`<display name>-<hash of mesh, name, zone>`), the same name on global and in every zone, so
east's and west's `redis` never meet. Their inputs are kept apart from the local ones:

- `remotedataplane`: another zone's Dataplanes under their synced names, with the labels
  their zone shows (`_provenance.dataplane_labels`: `kuma.io/origin: zone`, `kuma.io/zone`,
  `kuma.io/display-name`, ...) and its `kuma.io/zone` tag on their inbounds
  (`_provenance.zone_tagged`). Global's API lists them, read-only, as Kuma's global lists
  the Dataplanes its zones sync; a zone's does not (Kuma syncs no Dataplane to other zones).
  They are never endpoints, listeners or clusters of this zone's proxies: cross-zone traffic
  goes through the remote zone's ingresses (`projections.zoneingress`, with mTLS), which are
  folded here under their synced names too.
- `remotemeshservice`: MeshServices another zone's users created.
- `graceperiod` rows keyed `<zone>/MeshService`: that zone's own grace period setting.

From them `refresh` derives the visible remote MeshServices (`meshservice` rows): the
explicit one of a (mesh, zone, name), else one generated per (mesh, zone, `kuma.io/service`)
from that zone's Dataplanes. Kuma syncs the object the zone's generator made, so here the
zone's generation is done again by the very same rules (`projections.generation`'s `winner`
and `orphaned`), fed with that zone's events alone, which every log holds in that zone's
order: the existing ports win while a Dataplane still has them, else the oldest
Dataplane's; when its last Dataplane goes it stays for the grace period of its zone (that
zone's `GracePeriodConfigured`, synced with the rest of its subjects, so a replay finds it
at the same place; the default 1 h without one) and goes when this log folds an event at or
after `expires_at` (its projector ticks for it as for its own: `projections.ticker`). So
every log shows the same spec and the same expiry as the origin; only the moment it goes
may differ by the link's lag (it is judged by the events of the log that folds it).
A remote service is hidden at once while its zone is disabled, and removed with a deleted
zone (a tombstone `zone` row). What a deleted zone synced (its `remotedataplane`,
`remotemeshservice` and `zoneingress` rows) is kept out of sight (`parked*` rows, its events
still in flight folded there too; its grace period row stays, as the zone's setting) and
comes back when it registers again: this log holds all that zone wrote, once each, in its
order (its source resumes after the last origin sequence this stream holds, so what it
writes meanwhile follows), so the zone's full state is here again, as on Kuma's global once
the reconnected zone's KDS resent it (reference/multizone.md §1), and a replay folds it
alike. Another install of the zone registering under its name (a `ZoneApplied` with
`refused_install`: events.commands.zones) is refused: what the zone synced goes out of sight
the same way, its events folded meanwhile are dropped (either install's), and the old
install back shows its rows again. Labels as Kuma shows a synced
MeshService: `kuma.io/display-name`, `kuma.io/zone`, `kuma.io/env: universal`, and
`kuma.io/origin` `global` in a zone (Kuma's global->zone mapper relabels what it sends, so
the synced hostname generator, which selects origin `global`, names it) or `zone` on global.
Availability is `spec.state` (Available when a Dataplane of the zone selected by it has a
healthy inbound). In a zone it gets a VIP from the zone's own MeshService CIDR (IPAM); on
global none (Kuma's IPAM runs in zones only).

Everything else another zone writes (its other settings, signing keys, revocations,
policies) belongs to that control plane and is not folded here. (A mesh's CA is global's, folded in
zones as global's own events are: `projections.fold`.)
"""

from __future__ import annotations

from typing import Literal

import msgspec

from events import (
    SERVICE_TAG,
    AnyEvent,
    Dataplane,
    DataplaneDeregistered,
    DataplaneRegistered,
    GracePeriodConfigured,
    MeshServiceApplied,
    MeshServiceDeleted,
    Provenance,
    ZoneApplied,
    ZoneDeleted,
    ZoneIngress,
    ZoneIngressDeleted,
    ZoneIngressRegistered,
    is_dns1035_label,
)
from events.kds_hash import hashed_name
from events.resources import MeshServiceSelector, MeshServiceSpec
from projections import zoneingress
from projections._provenance import (
    ENV_LABEL,
    ORIGIN_LABEL,
    ZONE_LABEL,
    dataplane_labels,
    zone_tagged,
)
from projections.generation import (
    GENERATOR_LABELS,
    grace_period_key,
    grace_period_ms,
    orphaned,
    winner,
)
from projections.ipam import allocate_vip
from projections.state import ProjectionState, dp_key, ms_key
from projections.views import (
    DataplaneRow,
    GracePeriodRow,
    MeshServiceRow,
    MeshServiceStatus,
    RowMeta,
    ZoneIngressRow,
    ZoneRow,
)

__all__ = ["apply_remote", "apply_zone", "is_remote", "is_remote_row", "remote_zone_of"]

DISPLAY_NAME = "kuma.io/display-name"


def is_remote(state: ProjectionState, provenance: Provenance) -> bool:
    """Did another zone's control plane write the event?"""
    return provenance.origin == "zone" and provenance.zone != state.local_zone


def remote_zone_of(state: ProjectionState, row: MeshServiceRow) -> str | None:
    """The zone of a remote MeshService row; None for a local one (or one of global)."""
    zone = row.labels.get(ZONE_LABEL)
    return zone if zone is not None and zone != state.local_zone else None


def is_remote_row(state: ProjectionState, row: MeshServiceRow) -> bool:
    return remote_zone_of(state, row) is not None


def _seen_labels(state: ProjectionState, zone: str) -> dict[str, str]:
    """The provenance labels of zone `zone`'s resource as this control plane shows it."""
    origin = "zone" if state.local_zone == "" else "global"
    return {ORIGIN_LABEL: origin, ZONE_LABEL: zone, ENV_LABEL: "universal"}


def _enabled(state: ProjectionState, zone: str) -> bool:
    """A zone not (yet) registered counts as enabled: its events reach a log only through a
    source that its registration made. A deleted one is not."""
    row = state.get("zone", zone)
    return not isinstance(row, ZoneRow) or (
        row.enabled and not row.deleted and not row.refused_install)


def _services(dp: Dataplane | None) -> set[str]:
    if dp is None:
        return set()
    return {i.tags[SERVICE_TAG] for i in dp.networking.inbound if SERVICE_TAG in i.tags}


def _meta(old: object, seq: int, at: int) -> RowMeta:
    meta = getattr(old, "meta", None)
    created = meta.creation_time if isinstance(meta, RowMeta) else at
    return RowMeta(version=seq, creation_time=created, modification_time=at)


def apply_remote(state: ProjectionState, seq: int, event: AnyEvent,
                 provenance: Provenance) -> None:
    """Fold `event`, written by another zone (`is_remote`)."""
    zone = provenance.zone
    row = state.get("zone", zone)
    if isinstance(row, ZoneRow) and row.refused_install and not row.deleted:
        # another install of the zone is refused: what reaches this log of the zone
        # meanwhile (in flight before the sync removed its source) may be either install's,
        # so none of it is folded
        return
    if isinstance(row, ZoneRow) and row.deleted:
        # in flight when its zone was deleted (its source interleaves with global's): kept
        # with the rest of what the zone synced, out of sight until it registers again
        _apply_parked(state, seq, event, provenance)
        return
    match event:
        case DataplaneRegistered(dataplane=dp):
            key = dp_key(dp.mesh, hashed_name(dp.mesh, dp.name, zone))
            old = state.get("remotedataplane", key)
            old_dp = old.dataplane if isinstance(old, DataplaneRow) else None
            state.put("remotedataplane", key, _dataplane_row(old, seq, event, provenance))
            _dataplanes_changed(state, dp.mesh, zone, _services(old_dp) | _services(dp),
                                seq, event.at)
        case DataplaneDeregistered(mesh=mesh, name=name):
            key = dp_key(mesh, hashed_name(mesh, name, zone))
            old = state.get("remotedataplane", key)
            if isinstance(old, DataplaneRow):
                state.delete("remotedataplane", key)
                _dataplanes_changed(state, mesh, zone, _services(old.dataplane), seq, event.at)
        case MeshServiceApplied(meshservice=ms):
            key = ms_key(ms.mesh, hashed_name(ms.mesh, ms.name, zone))
            old = state.get("remotemeshservice", key)
            state.put("remotemeshservice", key, _meshservice_row(state, old, seq, event, zone))
            refresh(state, ms.mesh, zone, ms.name, seq, event.at)
        case MeshServiceDeleted(mesh=mesh, name=display):
            state.delete("remotemeshservice", ms_key(mesh, hashed_name(mesh, display, zone)))
            refresh(state, mesh, zone, display, seq, event.at)
        case ZoneIngressRegistered(zoneingress=zi):
            synced = _synced_ingress(zi, zone)
            zoneingress.ingress_registered(state, synced, provenance, _meta(
                state.get("zoneingress", synced.name), seq, event.at), synced=True)
        case ZoneIngressDeleted(name=name):
            zoneingress.ingress_deleted(state, hashed_name("", name, zone))
        case GracePeriodConfigured():
            _grace_period(state, event, zone)
        case _:
            pass  # that zone's own settings, keys and policies: not this control plane's


def _dataplane_row(old: object, seq: int, event: DataplaneRegistered,
                   provenance: Provenance) -> DataplaneRow:
    """Another zone's Dataplane under its synced name, with the labels and inbound
    `kuma.io/zone` tags its zone shows (Kuma's KDS carries them to global, which pins the
    tags to the zone they came from: the same zone)."""
    dp = event.dataplane
    labeled = msgspec.structs.replace(
        dp, name=hashed_name(dp.mesh, dp.name, provenance.zone),
        labels=dataplane_labels(dp, provenance, event.origin),
        networking=zone_tagged(dp.networking, provenance))
    return DataplaneRow(dataplane=labeled, meta=_meta(old, seq, event.at),
                        first_seq=old.first_seq if isinstance(old, DataplaneRow) else seq,
                        origin=event.origin)


def _meshservice_row(state: ProjectionState, old: object, seq: int,
                     event: MeshServiceApplied, zone: str) -> MeshServiceRow:
    ms = event.meshservice
    return MeshServiceRow(
        mesh=ms.mesh, name=hashed_name(ms.mesh, ms.name, zone),
        labels={DISPLAY_NAME: ms.name, **ms.labels, "kuma.io/mesh": ms.mesh,
                **_seen_labels(state, zone)},
        spec=ms.spec, status=MeshServiceStatus(), meta=_meta(old, seq, event.at),
        origin="user")


def _synced_ingress(zi: ZoneIngress, zone: str) -> ZoneIngress:
    """Kuma syncs ingresses across zones under hashed names, like MeshServices."""
    return msgspec.structs.replace(zi, name=hashed_name("", zi.name, zone),
                                   labels={DISPLAY_NAME: zi.name, **zi.labels})


def _grace_period(state: ProjectionState, event: GracePeriodConfigured, zone: str) -> None:
    """That zone's own grace period, for its generated MeshServices here (`refresh`): its
    event is in this log, sourced with the rest of its subjects, in its order among that
    zone's Dataplane events, so each deregistration meets the setting it met in its zone, in
    every log and every replay."""
    state.put("graceperiod", grace_period_key(event.kind, zone),
              GracePeriodRow(kind=event.kind, grace_period_ms=event.grace_period_ms,
                             zone=zone))


def _apply_parked(state: ProjectionState, seq: int, event: AnyEvent,
                  provenance: Provenance) -> None:
    """Fold `event` of a deleted zone into what that zone synced, kept out of sight
    (`parked*` rows, the same rows `apply_remote` writes, under the same keys), so that when
    it registers again this log shows all it has, as Kuma's global does once the zone's KDS
    resent its full state (`_unpark`)."""
    zone = provenance.zone
    match event:
        case DataplaneRegistered(dataplane=dp):
            key = dp_key(dp.mesh, hashed_name(dp.mesh, dp.name, zone))
            state.put("parkeddataplane", key, _dataplane_row(
                state.get("parkeddataplane", key), seq, event, provenance))
        case DataplaneDeregistered(mesh=mesh, name=name):
            state.delete("parkeddataplane", dp_key(mesh, hashed_name(mesh, name, zone)))
        case MeshServiceApplied(meshservice=ms):
            key = ms_key(ms.mesh, hashed_name(ms.mesh, ms.name, zone))
            state.put("parkedmeshservice", key, _meshservice_row(
                state, state.get("parkedmeshservice", key), seq, event, zone))
        case MeshServiceDeleted(mesh=mesh, name=display):
            state.delete("parkedmeshservice", ms_key(mesh, hashed_name(mesh, display, zone)))
        case ZoneIngressRegistered(zoneingress=zi):
            synced = _synced_ingress(zi, zone)
            state.put("parkedzoneingress", synced.name, zoneingress.ingress_row(
                synced, provenance, _meta(state.get("parkedzoneingress", synced.name), seq,
                                          event.at), synced=True))
        case ZoneIngressDeleted(name=name):
            state.delete("parkedzoneingress", hashed_name("", name, zone))
        case GracePeriodConfigured():
            _grace_period(state, event, zone)  # a zone's setting stays with a deleted zone
        case _:
            pass


_PARKED = (("remotedataplane", "parkeddataplane"), ("remotemeshservice", "parkedmeshservice"),
           ("zoneingress", "parkedzoneingress"))


def _of_zone(row: object, zone: str) -> bool:
    match row:
        case DataplaneRow():
            return row.dataplane.labels.get(ZONE_LABEL) == zone
        case MeshServiceRow():
            return row.labels.get(ZONE_LABEL) == zone
        case ZoneIngressRow():
            return row.zoneingress.zone == zone
        case _:
            return False


def _park(state: ProjectionState, zone: str) -> None:
    """A deleted zone's synced rows go out of sight, kept as they are."""
    for live, parked in _PARKED:
        for key, row in sorted(state.rows[live].items()):
            if _of_zone(row, zone):
                if live == "zoneingress":
                    zoneingress.ingress_deleted(state, key)
                else:
                    state.delete(live, key)
                state.put(parked, key, row)


def _unpark(state: ProjectionState, zone: str) -> None:
    """A deleted zone registered again: what it synced comes back as it was kept (with what
    it wrote meanwhile, `_apply_parked`); `apply_zone` derives its MeshServices again."""
    for live, parked in _PARKED:
        for key, row in sorted(state.rows[parked].items()):
            if _of_zone(row, zone):
                state.delete(parked, key)
                state.put(live, key, row)
    zoneingress.remote_services_changed(state, zones={zone})


def apply_zone(state: ProjectionState, seq: int, event: ZoneApplied | ZoneDeleted) -> None:
    """A zone joined, was enabled or disabled, or deleted: its remote MeshServices appear,
    hide or go."""
    match event:
        case ZoneApplied(name=zone, enabled=enabled, refused_install=refused):
            old = state.get("zone", zone)
            state.put("zone", zone, ZoneRow(name=zone, enabled=enabled,
                                            meta=_meta(old, seq, event.at),
                                            install=event.install, refused_install=refused))
            hidden = isinstance(old, ZoneRow) and (old.deleted or bool(old.refused_install))
            if zone == state.local_zone:  # a zone's own resources stay its own (Kuma)
                pass
            elif hidden and not refused:
                _unpark(state, zone)
            elif not hidden and refused:
                _park(state, zone)  # the old install's: out of sight, as when deleted
            elif isinstance(old, ZoneRow) and old.enabled == enabled and not hidden:
                return
        case ZoneDeleted(name=zone):
            old = state.get("zone", zone)
            hidden = isinstance(old, ZoneRow) and (old.deleted or bool(old.refused_install))
            state.put("zone", zone, ZoneRow(name=zone, enabled=False, deleted=True,
                                            meta=_meta(old, seq, event.at),
                                            install=event.install))
            if zone != state.local_zone and not hidden:
                _park(state, zone)
    for mesh, display in _known(state, zone):
        refresh(state, mesh, zone, display, seq, event.at)


def _known(state: ProjectionState, zone: str) -> list[tuple[str, str]]:
    """(mesh, display name) of every MeshService zone `zone` has or had here."""
    found: set[tuple[str, str]] = set()
    for (mesh, dp_zone), _keys in state.remote_dps.items():
        if dp_zone == zone:
            for dp_row in state.remote_dataplanes(mesh, zone):
                found |= {(mesh, s) for s in _services(dp_row.dataplane)}
    for collection in ("remotemeshservice", "meshservice"):
        for row in state.rows[collection].values():
            if isinstance(row, MeshServiceRow) and row.labels.get(ZONE_LABEL) == zone \
                    and zone != state.local_zone:
                found.add((row.mesh, row.labels.get(DISPLAY_NAME, row.name)))
    return sorted(found)


def _dataplanes_changed(state: ProjectionState, mesh: str, zone: str, services: set[str],
                        seq: int, at: int) -> None:
    for display in sorted(services):
        refresh(state, mesh, zone, display, seq, at)
    # explicit MeshServices of that zone may select the Dataplane: their state is derived again
    for row in state.meshservices_of(mesh):
        if row.origin == "user" and remote_zone_of(state, row) == zone:
            state.stale_services.add((mesh, row.name))


def refresh(state: ProjectionState, mesh: str, zone: str, display: str, seq: int,
            at: int) -> None:
    """Bring the visible remote MeshService `display` of (`mesh`, `zone`) in line with its
    inputs: the explicit one, else the one generated from that zone's Dataplanes by the rules
    of its zone (`generation.winner`: the existing ports win while a Dataplane has them;
    `generation.orphaned`: it outlives the last Dataplane by that zone's grace period), else
    none (a hidden or deleted zone's go at once)."""
    name = hashed_name(mesh, display, zone)
    current = state.meshservice(mesh, name)
    if not _enabled(state, zone):
        if current is not None:
            state.delete_meshservice(mesh, name)
        return
    explicit = state.get("remotemeshservice", ms_key(mesh, name))
    if isinstance(explicit, MeshServiceRow):
        _show(state, mesh, name, current, explicit.spec, explicit.labels, "user", seq, at)
        return
    # an explicit one just deleted is not what the generator made: as in its zone, the
    # generator starts afresh (`projections.fold`, MeshServiceDeleted)
    generated = current if current is not None and current.origin == "generated" else None
    dataplanes = ([r for r in state.remote_dataplanes(mesh, zone)
                   if display in _services(r.dataplane)] if is_dns1035_label(display) else [])
    if not dataplanes:
        if generated is not None:
            orphaned(state, generated, at, grace_period_ms(state, zone))
        elif current is not None:
            state.delete_meshservice(mesh, name)
        return
    _oldest, ports = winner(dataplanes, display, generated)
    spec = MeshServiceSpec(selector=MeshServiceSelector(dataplane_tags={SERVICE_TAG: display}),
                           ports=ports)
    labels = {"kuma.io/mesh": mesh, DISPLAY_NAME: display, **_seen_labels(state, zone),
              **GENERATOR_LABELS}
    _show(state, mesh, name, current, spec, labels, "generated", seq, at)


def _show(state: ProjectionState, mesh: str, name: str, current: MeshServiceRow | None,
          spec: MeshServiceSpec, labels: dict[str, str], origin: Literal["user", "generated"],
          seq: int, at: int) -> None:
    """The visible remote MeshService `name` of `mesh` with `spec`, `labels` and `origin`;
    one that was waiting out its grace period no longer is."""
    if current is not None and (current.spec.selector, current.spec.ports) == (
            spec.selector, spec.ports) and current.labels == labels \
            and current.origin == origin and current.expires_at is None:
        state.stale_services.add((mesh, name))
        return
    state.put("meshservice", ms_key(mesh, name), MeshServiceRow(
        mesh=mesh, name=name, labels=labels,
        spec=msgspec.structs.replace(spec, state=current.spec.state if current else None),
        status=current.status if current is not None else MeshServiceStatus(),
        meta=_meta(current, seq, at), origin=origin))
    if state.local_zone:  # zones only: Kuma's IPAM does not run on global
        allocate_vip(state, mesh, "MeshService", name)
    state.stale_services.add((mesh, name))
    state.stale_hostnames.add(mesh)
