"""The fold: one event into the projection state. Pure: state and event in, state out.

Order-dependent decisions (which Dataplane's ports win, which VIP a service gets) are taken
here, per event. Order-independent results (endpoints, status, hostnames) are marked stale and
derived once per batch by `projections.derive`, so batch boundaries never change the result.

Time only comes from events: before an event is applied, the generated MeshServices whose
grace period ended by its `at` are removed (`generation.expire_due`), the meshes whose
certificate window ended move to the next (`identity.renew_due`) and the revocations whose
tokens expired long enough ago go (`ProjectionState.drop_revocations_due`, `RevocationRow.drop_at`);
`ClockTicked` exists for that alone.

Provenance only comes from events too: what an event brings is labelled with the zone and
origin of the control plane that wrote it (`events.provenance_of` its subject), never with
the zone the projector runs in, so a zone's log holding events sourced from other zones and
from global folds each with its own (DESIGN.md, Multi-zone).
"""

from __future__ import annotations

from typing import Literal, TypeVar, assert_never

import msgspec

from events import (
    DEFAULT_HOSTNAME_GENERATORS,
    SERVICE_TAG,
    AnyEvent,
    CaCreated,
    ClockTicked,
    Dataplane,
    DataplaneDeregistered,
    DataplaneRegistered,
    GracePeriodConfigured,
    HostnameGenerator,
    HostnameGeneratorApplied,
    HostnameGeneratorDeleted,
    IpamConfigured,
    MeshApplied,
    MeshDeleted,
    MeshMultiZoneServiceApplied,
    MeshMultiZoneServiceDeleted,
    MeshServiceApplied,
    MeshServiceDeleted,
    PolicyApplied,
    PolicyDeleted,
    Provenance,
    SequenceSkipped,
    SigningKeyCreated,
    SigningKeyRetired,
    TokenRevoked,
    ZoneApplied,
    ZoneDeleted,
    ZoneIngressDeleted,
    ZoneIngressRegistered,
    kind_of_event,
)
from events.event_types import TokenPurpose
from events.identity import ZONE_TOKEN, KeyId, key_id
from events.resources import MeshScopedResource
from events.subjects import GLOBAL_ZONE
from projections import multizone, zoneingress
from projections._provenance import (
    dataplane_labels,
    mesh_labels,
    provenance_labels,
    zone_tagged,
)
from projections.generation import (
    expire_due,
    grace_period_key,
    regenerate,
    same_ports_for_same_tags,
    service_name_conditions,
)
from projections.identity import dataplane_moved, open_ca, refresh_trust, renew_due
from projections.ipam import allocate_vip, configure_cidr
from projections.remote import apply_remote, apply_zone, is_remote
from projections.state import ProjectionState, dp_key, ms_key, same_tags
from projections.views import (
    CaRow,
    DataplaneRow,
    GracePeriodRow,
    HostnameGeneratorRow,
    MeshRow,
    MeshServiceRow,
    MeshServiceStatus,
    PolicyRow,
    RevocationRow,
    RowMeta,
    SigningKeyRow,
    signing_key_row_key,
)

__all__ = ["apply_event", "pass_time", "put_readiness"]


_DEFAULT_GENERATORS = {g.name: g for g in DEFAULT_HOSTNAME_GENERATORS}
_LOCAL_ONLY = (IpamConfigured, GracePeriodConfigured, SigningKeyCreated, SigningKeyRetired,
               TokenRevoked)
"""What configures or belongs to the control plane that wrote it: folded in its own log only.
A mesh's CA is not among them: Kuma syncs it from global to zones with the Mesh (a zone never
makes one, as it refuses Mesh writes), so a zone's proxies get certificates of the mesh's one
CA and cross-zone mTLS holds. Nor are global's zone-token keys, their retirements and global's
revocations of zone tokens (`_global_zone_token`)."""


def apply_event(
    state: ProjectionState, seq: int, event: AnyEvent, provenance: Provenance,
) -> None:
    """Fold `event`, stored at sequence `seq` and written by the control plane `provenance`
    names (`events.provenance_of(record.subject)`), into `state`."""
    _advance(state, event.at)
    if provenance != state.local_provenance:  # this log's own events are neither
        if is_remote(state, provenance):
            apply_remote(state, seq, event, provenance)
            return
        if (provenance.zone != state.local_zone and isinstance(event, _LOCAL_ONLY)
                and not _global_zone_token(event, provenance)):
            return  # global's own settings and keys: a zone keeps its own
    if type(event) is DataplaneRegistered:  # most of a log: ahead of the match's patterns
        _dataplane_registered(state, seq, event, provenance)
        return
    match event:
        case MeshApplied(mesh=mesh):
            old = state.get("mesh", mesh.name)
            computed = mesh_labels(provenance)
            if computed:  # global's Mesh, in its log and in every zone's: `kuma.io/origin`
                mesh = msgspec.structs.replace(mesh, labels={**mesh.labels, **computed})
            state.put("mesh", mesh.name, MeshRow(mesh=mesh, meta=_meta(old, seq, event.at)))
            refresh_trust(state, mesh.name, event.at)
            zoneingress.remote_services_changed(state, mesh=mesh.name)
        case MeshDeleted(name=name):
            state.delete("mesh", name)
            _mesh_secrets_deleted(state, name)
            refresh_trust(state, name, event.at)
            zoneingress.remote_services_changed(state, mesh=name)
        case DataplaneRegistered():
            _dataplane_registered(state, seq, event, provenance)
        case DataplaneDeregistered(mesh=mesh, name=name):
            _dataplane_changed(state, seq, event.at, mesh, name, None, "api")
        case MeshServiceApplied(meshservice=ms):
            old = state.meshservice(ms.mesh, ms.name)
            row = MeshServiceRow(
                mesh=ms.mesh, name=ms.name,
                labels={"kuma.io/display-name": ms.name, **ms.labels, "kuma.io/mesh": ms.mesh,
                        **provenance_labels(provenance)},
                spec=ms.spec,
                status=old.status if old is not None else MeshServiceStatus(),
                meta=_meta(old, seq, event.at),  # taking over a generated one keeps its age
                origin="user",
            )
            state.put("meshservice", ms_key(ms.mesh, ms.name), row)
            allocate_vip(state, ms.mesh, "MeshService", ms.name)
            state.stale_services.add((ms.mesh, ms.name))
            state.stale_hostnames.add(ms.mesh)
        case MeshServiceDeleted(mesh=mesh, name=name):
            state.delete_meshservice(mesh, name)
            # Dataplanes may still carry the service tag: the generator takes over.
            regenerate(state, mesh, name, seq, event.at)
        case IpamConfigured(kind=kind, cidr=cidr):
            configure_cidr(state, kind, cidr)
            if kind == "MeshService":
                _retry_vips(state)
            elif kind == multizone.KIND:
                multizone.retry_vips(state)
        case HostnameGeneratorApplied(hostname_generator=hg):
            old = state.get("hostnamegenerator", hg.name)
            state.put("hostnamegenerator", hg.name, HostnameGeneratorRow(
                generator=_labeled(hg, provenance), meta=_meta(old, seq, event.at),
                origin="user"))
            state.stale_hostnames.update(state.ms_by_mesh)
            multizone.generators_changed(state)
        case HostnameGeneratorDeleted(name=name):
            state.delete("hostnamegenerator", name)
            if name in _DEFAULT_GENERATORS:  # the override goes, the default comes back
                _restore_default(state, name, event.at, state.local_provenance)
            state.stale_hostnames.update(state.ms_by_mesh)
            multizone.generators_changed(state)
        case GracePeriodConfigured(kind=kind, grace_period_ms=grace):
            state.put("graceperiod", grace_period_key(kind),
                      GracePeriodRow(kind=kind, grace_period_ms=grace))
        case ClockTicked():
            pass  # its time did the work: expire_due and renew_due above
        case SequenceSkipped():
            pass  # the projector acts on it at the skipped sequence (projections.worker)
        case CaCreated(mesh=mesh, backend=backend):
            old = state.ca(mesh, backend)
            state.put("ca", dp_key(mesh, backend), CaRow(
                mesh=mesh, backend=backend, type=event.type, cert=event.cert, key=event.key,
                meta=_meta(old, seq, event.at), synced=provenance.zone != state.local_zone))
            ca = state.ca(mesh, backend)
            assert ca is not None
            if not ca.synced:
                open_ca(state, ca)  # a key that does not open stops the fold here, by name
            # global's CA in a zone: one it cannot open leaves that mesh's proxies here without
            # certificates (reported by `derive_identities`), never halts the fold
            refresh_trust(state, mesh, event.at)
            zoneingress.remote_services_changed(state, mesh=mesh)
        case PolicyApplied(policy=policy):  # every kind alike (`events.policy_kinds`)
            collection, key = kind_of_event(event).collection, dp_key(policy.mesh, policy.name)
            old = state.get(collection, key)
            state.put(collection, key, PolicyRow(
                policy=_policy_labeled(policy, provenance), meta=_meta(old, seq, event.at)))
        case PolicyDeleted(mesh=mesh, name=name):
            state.delete(kind_of_event(event).collection, dp_key(mesh, name))
        case MeshMultiZoneServiceApplied(meshmultizoneservice=mmzs):
            old = state.get("meshmultizoneservice", dp_key(mmzs.mesh, mmzs.name))
            multizone.mmzs_applied(state, mmzs, provenance, _meta(old, seq, event.at))
        case MeshMultiZoneServiceDeleted(mesh=mesh, name=name):
            multizone.mmzs_deleted(state, mesh, name)
        case ZoneIngressRegistered(zoneingress=zi):
            zoneingress.ingress_registered(state, zi, provenance, _meta(
                state.get("zoneingress", zi.name), seq, event.at))
        case ZoneIngressDeleted(name=name):
            zoneingress.ingress_deleted(state, name)
        case SigningKeyCreated():
            _signing_key_created(state, event, provenance)
        case SigningKeyRetired(purpose=purpose, mesh=mesh, serial=serial):
            # the row goes: gateways and the API verify with the rows alone
            state.delete("signingkey", signing_key_row_key(_kid(purpose, mesh, serial,
                                                                 provenance)))
        case TokenRevoked():
            _token_revoked(state, event)
        case ZoneApplied() | ZoneDeleted():
            apply_zone(state, seq, event)
        case _:
            assert_never(event)


def _restore_defaults(state: ProjectionState) -> None:
    """The zone's defaults exist from the beginning of time (0), not from whichever event this
    code happens to fold first: a store projected by a release without them (or without one
    added since) gets the rows a replay from sequence 1 gets (invariant 4). They carry the
    provenance of this log's own control plane, whichever event restores them (in a zone's log
    the first event may come from global). A default never goes otherwise: deleting its
    override restores it."""
    generators = state.rows["hostnamegenerator"]
    if not _DEFAULT_GENERATORS.keys() <= generators.keys():
        for name in sorted(_DEFAULT_GENERATORS.keys() - generators.keys()):
            _restore_default(state, name, 0, state.local_provenance)
        state.stale_hostnames.update(state.ms_by_mesh)
        multizone.generators_changed(state)
    state.generators_complete = True


def _token_revoked(state: ProjectionState, event: TokenRevoked) -> None:
    """A revocation row, unless its token expired long enough before the event that it would
    go before the next one (`RevocationRow.drop_at`): the same rows as putting it and
    dropping it at once."""
    row = RevocationRow(purpose=event.purpose, jti=event.jti, revoked_at=event.at,
                        expires_at=event.expires_at, mesh=event.mesh)
    key = f"{event.mesh or '_'}/{event.jti}"
    when = row.drop_at()
    if when is None or event.at < when:
        state.put("revocation", key, row)
    else:
        state.delete("revocation", key)


def _mesh_secrets_deleted(state: ProjectionState, mesh: str) -> None:
    """Kuma deletes a mesh's secrets with the mesh: its dataplane-token signing keys
    (`dataplane-token-signing-key-<mesh>-<serial>`) and its revocations
    (`dataplane-token-revocations-<mesh>`). Their rows go, in key order, so every token of
    the mesh is refused from now on, also once a Mesh of that name is created again (it signs
    with a new serial); gateways end the open streams that hold one, as at a retirement. The
    mesh's CAs stay (`events.commands.ca`: never silently re-create a CA). A rare event: the
    rows are scanned, not indexed."""
    prefix = f"{mesh}/"
    for collection in ("signingkey", "revocation"):
        for key in sorted(k for k in state.rows[collection] if k.startswith(prefix)):
            state.delete(collection, key)


def _global_zone_token(event: AnyEvent, provenance: Provenance) -> bool:
    """Is `event` global's zone-token key (created or retired) or global's revocation of a
    zone token? Every zone folds those: global signs the zone tokens of every zone's ingresses
    and each zone's gateways verify them (Kuma syncs `zone-token-signing-key-<n>` and the
    zone-token revocations from global to zones). Global's key rows are apart from a zone's
    own (`signing_key_row_key`); a revocation's row is keyed by its token's jti (a UUID),
    whoever revoked it."""
    return (provenance.origin == "global"
            and isinstance(event, SigningKeyCreated | SigningKeyRetired | TokenRevoked)
            and event.purpose == ZONE_TOKEN)


def _kid(purpose: TokenPurpose, mesh: str | None, serial: int, provenance: Provenance
         ) -> KeyId:
    """The kid of a key, by the control plane that made it (the event's provenance)."""
    zone = GLOBAL_ZONE if provenance.origin == "global" else provenance.zone
    return key_id(purpose, mesh, serial, zone=zone)


def _signing_key_created(state: ProjectionState, event: SigningKeyCreated,
                         provenance: Provenance) -> None:
    """The public half only. A key is created once (appended at sequence 0 on its subject)
    and its serial is never made again, even once retired; should another log's copy of the
    same kid come along, the first one stays: a key never changes.

    A mesh's key belongs to the Mesh as it is when the key is created: one created while
    the Mesh does not exist (a token request that raced its deletion) gets no row, so it is
    no key of a Mesh created again later (the command side, `events.commands.meshes`, counts
    it as an earlier life's too)."""
    if event.mesh is not None and state.get("mesh", event.mesh) is None:
        return
    kid = _kid(event.purpose, event.mesh, event.serial, provenance)
    key = signing_key_row_key(kid)
    if state.get("signingkey", key) is None:
        state.put("signingkey", key, SigningKeyRow(
            kid=str(kid), purpose=event.purpose, serial=event.serial,
            public_key=event.public_key, created_at=event.at, mesh=event.mesh))


def _labeled(hg: HostnameGenerator, provenance: Provenance) -> HostnameGenerator:
    """Kuma's computed labels of a resource its control plane created."""
    return msgspec.structs.replace(hg, labels={**hg.labels, **provenance_labels(provenance)})


_Policy = TypeVar("_Policy", bound=MeshScopedResource)


def _policy_labeled(mtp: _Policy, provenance: Provenance) -> _Policy:
    """Kuma's computed labels of a policy, as a Dataplane gets them: `kuma.io/display-name`
    unless the user set it; the control plane's win over user labels of the same key."""
    return msgspec.structs.replace(mtp, labels={
        "kuma.io/display-name": mtp.name, **mtp.labels, "kuma.io/mesh": mtp.mesh,
        **provenance_labels(provenance)})


def _restore_default(state: ProjectionState, name: str, at: int,
                     provenance: Provenance) -> None:
    state.put("hostnamegenerator", name, HostnameGeneratorRow(
        generator=_labeled(_DEFAULT_GENERATORS[name], provenance),
        meta=RowMeta(version=0, creation_time=at, modification_time=at), origin="default"))


def _retry_vips(state: ProjectionState) -> None:
    """Services left without a VIP (the old CIDR was exhausted) get one from the new CIDR,
    in key order so that replay hands out the same addresses."""
    for row in state.meshservices():
        if not row.status.vips:
            mesh, name = row.mesh, row.name
            if allocate_vip(state, mesh, "MeshService", name) is not None:
                state.stale_services.add((mesh, name))


def _meta(old: object, seq: int, at: int) -> RowMeta:
    meta = getattr(old, "meta", None)
    created = meta.creation_time if isinstance(meta, RowMeta) else at
    return RowMeta(version=seq, creation_time=created, modification_time=at)


def _advance(state: ProjectionState, at: int) -> None:
    """What every event does before its own: the time `at` comes (what falls due by it goes),
    and the default HostnameGenerators are there."""
    due = state.next_expiry()
    if due is not None and at >= due:  # before it, none has anything to do
        expire_due(state, at)
        renew_due(state, at)
        state.drop_revocations_due(at)
    if not state.generators_complete:
        _restore_defaults(state)


def pass_time(state: ProjectionState, at: int) -> None:
    """What a readiness change that a later event of the batch replaces does to the state
    (`projections.readiness`): its time comes. Its row is replaced before the batch is
    derived, and what it would mark stale is marked by what replaces it (the same Dataplane's
    services and selectors, its identity), or by what changed those in between
    (MeshServiceApplied marks its MeshService; `refresh_trust`, every identity of the mesh; a
    deleted MeshService has nothing to derive)."""
    _advance(state, at)


def put_readiness(state: ProjectionState, seq: int, event: DataplaneRegistered,
                  provenance: Provenance) -> None:
    """What folding `event`, a readiness change at sequence `seq` of the Dataplane the state
    holds, does besides `pass_time` (which it had): for a change no later event replaced
    after all (`projections.readiness`). Its row, and the marks of what is derived from it."""
    dp = event.dataplane
    key = dp_key(dp.mesh, dp.name)
    row = state.dataplane_at(key)
    assert row is not None, key
    registered = _registered(event, provenance)
    state.put("dataplane", key, msgspec.structs.replace(
        row, dataplane=registered,
        meta=RowMeta(version=seq, modification_time=event.at,
                     creation_time=row.meta.creation_time),
        # made again, as `_dataplane_changed` does: a row of an older release's store may
        # hold other words
        conditions=service_name_conditions(registered)))
    mesh, stale = dp.mesh, state.stale_services
    for selector in state.selecting_dataplane(key, mesh, registered):
        stale.add((mesh, selector))
    for service in _services(registered):
        stale.add((mesh, service))
    if state.trust(mesh) is not None:
        state.stale_identities.add((mesh, dp.name))


def _dataplane_registered(state: ProjectionState, seq: int, event: DataplaneRegistered,
                          provenance: Provenance) -> None:
    dp = event.dataplane
    _dataplane_changed(state, seq, event.at, dp.mesh, dp.name, _registered(event, provenance),
                       event.origin)


def _registered(event: DataplaneRegistered, provenance: Provenance) -> Dataplane:
    """The Dataplane `event` registers, with its labels and its inbounds' `kuma.io/zone` tag,
    both from the event's provenance."""
    dp = event.dataplane
    return msgspec.structs.replace(
        dp, labels=dataplane_labels(dp, provenance, event.origin),
        networking=zone_tagged(dp.networking, provenance))


def _dataplane_changed(
    state: ProjectionState, seq: int, at: int, mesh: str, name: str,
    new: Dataplane | None, origin: Literal["api", "proxy"],
) -> None:
    key = dp_key(mesh, name)
    old = state.dataplane_at(key)
    before = old.dataplane if old is not None else None
    same_ports = False
    if before is not None and new is not None and same_tags(before, new):
        # a health flip or a port change: the same services and selectors as before
        touched = _services(new)
        selecting = state.selecting_dataplane(key, mesh, new)
        previous = before
        same_ports = same_ports_for_same_tags(before, new)
    else:
        previous = None
        touched = _services(before) | _services(new)
        # MeshServices that selected the old or select the new Dataplane need new endpoints.
        selecting = (state.meshservices_selecting(mesh, before)
                     | state.meshservices_selecting(mesh, new))
    stale = state.stale_services
    for selector in selecting:
        stale.add((mesh, selector))
    if state.trust(mesh) is not None:
        state.stale_identities.add((mesh, name))
    if new is None:
        state.delete("dataplane", key)
    else:
        row = DataplaneRow(
            dataplane=new,
            meta=RowMeta(version=seq, modification_time=at,
                         creation_time=old.meta.creation_time if old is not None else at),
            first_seq=old.first_seq if old is not None else seq,
            origin=origin,
            # made again, not kept from the row: a store an older release wrote may hold
            # other words, which a replay from sequence 1 would not (invariant 4)
            conditions=service_name_conditions(new),
        )
        if previous is not None:
            state.replace_dataplane(key, row)  # the tags did not change
        else:
            state.put("dataplane", key, row)
    if (old is None) != (new is None):
        dataplane_moved(state, mesh, name, at)  # its renewal group may be newly (un)occupied
    # in name order (a VIP each regeneration may hand out depends on it); one needs no sort
    for service in touched if len(touched) == 1 else sorted(touched):
        regenerate(state, mesh, service, seq, at, changed=new, previous=previous,
                   same_ports=same_ports)


def _services(dp: Dataplane | None) -> set[str]:
    if dp is None:
        return set()
    return {i.tags[SERVICE_TAG] for i in dp.networking.inbound if SERVICE_TAG in i.tags}

