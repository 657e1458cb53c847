"""Resource commands: apply and delete Kuma resources, and the zone's recorded settings.

The domain rules of a write are decided here, from the log (never from read models, which may
lag behind it):

- a resource of a mesh needs its Mesh;
- `If-Match` must name the resource's current version (its subject's last sequence);
- a write that changes nothing appends nothing; the labels the control plane computes
  (`events.labels`) are not the user's, so a resource is compared and stored without them
  (applying back what a GET returned is `unchanged`, as in Kuma);
- a MeshMultiZoneService belongs to the global control plane: a zone's refuses it (409,
  saying where to apply it); a standalone control plane (zone `default`) takes it too, so
  that one zone can use it (Kuma takes it on global only, kumahq/kuma#11740);
- a ZoneIngress belongs to the zone that registers it: global refuses it (409), and one whose
  `zone` names another zone is invalid (the fold pins `zone` to the writer's anyway);
- a resource another control plane synced here (global's in a zone, a zone's elsewhere) is
  read-only here: a write of its name is refused (409, naming where to change it), decided
  from that control plane's subjects in the log (`events.commands.synced`);
- a Mesh that still has Dataplanes, MeshServices, policies (of any kind in
  `events.policy_kinds`) or MeshMultiZoneServices cannot be deleted (they would come back
  with a Mesh of the same name); a MeshService generated from Dataplane inbounds cannot be
  deleted (it goes when its Dataplanes go); a default HostnameGenerator of the zone cannot
  be deleted (applying one of its name overrides it).

The guards that look at other subjects read them just before the command's own append, with no
lock across subjects (Kuma's store has the same window): a Dataplane registered in that
instant can outlive its Mesh, and the projector then shows it without a mesh.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from msgspec import Struct

from events.commands._live import live_resource
from events.commands.ca import CaCommands
from events.commands.handler import (
    Append,
    CommandHandler,
    Current,
    Decision,
    Keep,
    current_of,
)
from events.commands.meshes import current_mesh
from events.commands.skips import SkipCommands
from events.commands.synced import SyncedGuard
from events.errors import (
    Conflict,
    InvalidResource,
    NotFound,
    Violation,
    WrongControlPlane,
)
from events.event_types import (
    AnyEvent,
    DataplaneDeregistered,
    DataplaneRegistered,
    GracePeriodConfigured,
    GracePeriodKind,
    HostnameGeneratorApplied,
    HostnameGeneratorDeleted,
    IpamConfigured,
    MeshApplied,
    MeshDeleted,
    MeshMultiZoneServiceApplied,
    MeshMultiZoneServiceDeleted,
    MeshServiceApplied,
    MeshServiceDeleted,
    ZoneIngressDeleted,
    ZoneIngressRegistered,
    now_ms,
)
from events.identity.sealing import SecretKey
from events.labels import without_computed
from events.log import EventLog
from events.policy_kinds import POLICY_KINDS, kind_of_policy, policy_kind
from events.resources import (
    DEFAULT_HOSTNAME_GENERATORS,
    Dataplane,
    HostnameGenerator,
    Mesh,
    MeshMultiZoneService,
    MeshService,
    Resource,
    ServiceKind,
    ZoneIngress,
)
from events.subjects import (
    GLOBAL_ZONE,
    grace_period_subject,
    ipam_subject,
    provenance_of,
    resource_subject,
    resources_filter,
)
from events.validation import SERVICE_TAG

__all__ = ["GLOBAL_KINDS", "Commands", "Deployment", "WriteResult", "live_resource"]


class WriteResult(Struct, frozen=True):
    seq: int
    """The resource's version after the write (its subject's last sequence)."""
    created: bool = False
    unchanged: bool = False


Deployment = Literal["standalone", "global", "zone"]
GLOBAL_KINDS = frozenset({"Mesh", "MeshMultiZoneService"})
"""What belongs to the global control plane of a multi-zone deployment, Kuma's KDS kinds that
flow only global to zones (reference/multizone.md §1): a zone refuses to write them.
HostnameGenerators and policies go both ways in Kuma: a zone may make its own (they apply in
that zone; meshlog does not sync them on to other zones)."""


class Commands:
    """The resource commands of one zone's control plane."""

    def __init__(self, log: EventLog | CommandHandler, *, zone: str,
                 clock: Callable[[], int] = now_ms, secret_key: SecretKey | None = None,
                 deployment: Deployment = "standalone") -> None:
        """`secret_key` seals the CA keys of meshes with mTLS; without it, such a Mesh is
        refused (`NoSecretKey`). `deployment`: a zone of a multi-zone deployment refuses
        global's kinds (`GLOBAL_KINDS`), the global control plane refuses Dataplanes."""
        self.handler = CommandHandler.of(log)
        self._zone = zone
        self.deployment = deployment
        self._clock = clock
        self._cas = CaCommands(self.handler, zone=zone, secret_key=secret_key, clock=clock)
        self.skips = SkipCommands(self.handler, zone=zone)
        """Operators' decisions to fold an unreadable event as nothing."""
        self.synced = SyncedGuard(self.handler, zone=zone, deployment=deployment)
        """The refusal of writes to resources another control plane synced here."""

    @property
    def zone(self) -> str:
        """The zone this control plane writes as (`GLOBAL_ZONE` on global)."""
        return self._zone

    async def apply(self, resource: Resource, *, if_match: int | None = None,
                    idempotency_key: str | None = None,
                    headers: Mapping[str, str] | None = None) -> WriteResult:
        """Create or update `resource`."""
        mesh = getattr(resource, "mesh", None)
        # another control plane's resource of that name: newer than its records, or not shown;
        # ahead of the owner rule, whose words are vaguer (a zone's Dataplane on global)
        shadow = await self.synced.refuse(type(resource).__name__, mesh, resource.name)
        self._check_owner(type(resource).__name__, resource.name)
        if isinstance(resource, ZoneIngress):
            self._check_ingress_zone(resource)
        if mesh is not None:
            await self._require_mesh(mesh)
        subject = resource_subject(type(resource).__name__, mesh, resource.name, self._zone)
        provenance = provenance_of(subject)
        resource = without_computed(resource, provenance)
        if isinstance(resource, Mesh):
            if if_match is not None:  # a refused write must not change the CAs either
                _check_if_match(subject, if_match, (await self.handler.current(subject)).seq)
            # its CAs first: a Mesh in the log never names a backend whose CA is not there
            await self._cas.record(resource)
            resource = self._cas.stored(resource)
        at = self._clock()

        def decide(current: Current) -> Decision:
            _check_if_match(subject, if_match, current.seq)
            live = live_resource(current.event)
            # an event written before computed labels were dropped may hold them: it folds to
            # the same row as one without them
            if live is not None and current.seq > shadow and without_computed(
                    live, provenance) == resource:
                return Keep()
            return Append(_applied(resource, at))

        outcome = await self.handler.execute(subject, decide, key=idempotency_key,
                                             headers=headers)
        return WriteResult(seq=outcome.seq, unchanged=not outcome.appended,
                           created=outcome.appended and live_resource(
                               outcome.previous.event) is None)

    async def stored_mesh(self, name: str) -> Mesh | None:
        """Mesh `name` as the log holds it now (None if it does not exist)."""
        current = await current_mesh(self.handler, name, self._zone)
        resource = live_resource(current.event)
        return resource if isinstance(resource, Mesh) else None

    async def delete(self, kind: str, mesh: str | None, name: str, *, if_match: int | None = None,
                     headers: Mapping[str, str] | None = None) -> WriteResult:
        """Delete a resource; the guards of the module docstring apply."""
        await self.synced.refuse(kind, mesh, name)  # ahead of the owner rule, as in `apply`
        self._check_owner(kind, name)
        subject = resource_subject(kind, mesh, name, self._zone)
        if kind == "Mesh":
            await self._require_empty(name)
        at = self._clock()

        def decide(current: Current) -> Decision:
            if live_resource(current.event) is None:
                if kind == "HostnameGenerator" and name in _DEFAULT_GENERATORS:
                    raise Conflict(subject, 0, f"HostnameGenerator {name!r} is a default of "
                                   "the zone and cannot be deleted; apply one of that name to "
                                   "override it (a selector that matches nothing turns it off)")
                where = f" in mesh {mesh!r}" if mesh else ""
                raise NotFound(f"{kind} {name!r}{where} does not exist")
            _check_if_match(subject, if_match, current.seq)
            return Append(_deleted(kind, mesh, name, at), content=b"delete")

        try:
            outcome = await self.handler.execute(subject, decide, headers=headers)
        except NotFound:
            if kind == "MeshService" and mesh is not None:
                await self._refuse_generated(mesh, name)  # not in the log, but generated?
            raise
        return WriteResult(seq=outcome.seq)

    async def configure_ipam(self, kind: ServiceKind, cidr: str,
                             default: str | None = None) -> WriteResult:
        """Record the CIDR new VIPs come from, if it differs from the one in the log; with
        `default`, a log without a record counts as holding that CIDR (nothing is recorded
        for a setting left at its default)."""
        event = IpamConfigured(at=self._clock(), kind=kind, cidr=cidr)

        def decide(current: Current) -> Decision:
            recorded = (current.event.cidr if isinstance(current.event, IpamConfigured)
                        else default)
            if recorded == cidr:
                return Keep()
            return Append(event, content=cidr.encode())

        outcome = await self.handler.execute(ipam_subject(kind, self._zone), decide)
        return WriteResult(seq=outcome.seq, unchanged=not outcome.appended,
                           created=outcome.appended and outcome.previous.seq == 0)

    async def configure_grace_period(self, kind: GracePeriodKind, grace_period_ms: int,
                                     default_ms: int) -> WriteResult | None:
        """Record how long a generated `kind` outlives its last Dataplane, if that differs
        from the log (no record in the log means `default_ms`). None: nothing to record."""
        event = GracePeriodConfigured(at=self._clock(), grace_period_ms=grace_period_ms,
                                      kind=kind)

        def decide(current: Current) -> Decision:
            recorded = (current.event.grace_period_ms
                        if isinstance(current.event, GracePeriodConfigured) else default_ms)
            if recorded == grace_period_ms:
                return Keep()
            return Append(event, content=str(grace_period_ms).encode())

        outcome = await self.handler.execute(grace_period_subject(kind, self._zone), decide)
        if not outcome.appended:
            return None
        return WriteResult(seq=outcome.seq, created=outcome.previous.seq == 0)

    def _check_owner(self, kind: str, name: str) -> None:
        """Kuma's rule: each kind is written where it is owned (a 409 saying where)."""
        if self.deployment == "zone" and kind in GLOBAL_KINDS:
            raise WrongControlPlane(
                kind.lower(), f"{kind} {name!r} belongs to the global control plane: apply it "
                "there (`meshlog --api <global API> apply`); it reaches this zone through the "
                "sync")
        if self.deployment == "global" and kind == "Dataplane":
            raise WrongControlPlane(kind.lower(), f"Dataplane {name!r}: Dataplanes register in "
                                    "their zone's control plane, not on global")

    def _check_ingress_zone(self, ingress: ZoneIngress) -> None:
        """A ZoneIngress is a zone's: global has none, and a zone registers only its own."""
        if self.deployment == "global" or self._zone in (GLOBAL_ZONE, ""):
            raise Conflict(resource_subject("ZoneIngress", None, ingress.name, self._zone), 0,
                           f"a ZoneIngress belongs to the zone it routes into: register "
                           f"{ingress.name!r} on that zone's control plane, not on global")
        if ingress.zone is not None and ingress.zone != self._zone:
            raise InvalidResource("ZoneIngress", [Violation(
                "zone", f"{ingress.zone!r} is not this control plane's zone {self._zone!r}: "
                        "a ZoneIngress is registered by the zone it belongs to")])

    # --- guards that read other subjects --------------------------------------------------------

    async def _require_mesh(self, mesh: str) -> None:
        current = await current_mesh(self.handler, mesh, self._zone)
        if live_resource(current.event) is None:
            raise NotFound(f"mesh {mesh!r} does not exist: create it first (type: Mesh)")

    async def _require_empty(self, mesh: str) -> None:
        owners = [("Dataplane", "dataplanes"), ("MeshService", "meshservices"),
                  *((k.type_name, k.plural) for k in POLICY_KINDS),
                  ("MeshMultiZoneService", "meshmultizoneservices")]
        for kind, plural in owners:
            owned = sorted(r.name for r in await self._live(kind, mesh))
            if owned:
                raise Conflict("mesh", 0, f"mesh {mesh!r} still has {len(owned)} "
                               f"{plural} (e.g. {owned[0]!r}); delete them first")

    async def _refuse_generated(self, mesh: str, name: str) -> None:
        """A MeshService that is not in the log but that live Dataplanes' inbounds generate."""
        for dataplane in await self._live("Dataplane", mesh):
            if isinstance(dataplane, Dataplane) and any(
                    i.tags.get(SERVICE_TAG) == name for i in dataplane.networking.inbound):
                raise Conflict("meshservice", 0, f"MeshService {name!r} is generated from "
                               "Dataplane inbounds; it goes when its Dataplanes go")

    async def _live(self, kind: str, mesh: str) -> list[Resource]:
        """The live resources of `kind` in `mesh`, in any zone of this log."""
        records = await self.handler.log.latest(resources_filter(kind, mesh))
        live = (live_resource(current_of(record).event) for record in records)
        return [resource for resource in live if resource is not None]


_DEFAULT_GENERATORS = {g.name for g in DEFAULT_HOSTNAME_GENERATORS}


def _check_if_match(subject: str, if_match: int | None, seq: int) -> None:
    if if_match is not None and if_match != seq:
        raise Conflict(subject, if_match,
                       f"version {if_match} is stale: the resource is at version {seq}; "
                       "read it again and retry")


def _applied(resource: Resource, at: int) -> AnyEvent:
    match resource:
        case Mesh():
            return MeshApplied(at=at, mesh=resource)
        case Dataplane():
            return DataplaneRegistered(at=at, dataplane=resource)
        case MeshService():
            return MeshServiceApplied(at=at, meshservice=resource)
        case HostnameGenerator():
            return HostnameGeneratorApplied(at=at, hostname_generator=resource)
        case MeshMultiZoneService():
            return MeshMultiZoneServiceApplied(at=at, meshmultizoneservice=resource)
        case ZoneIngress():
            return ZoneIngressRegistered(at=at, zoneingress=resource)
        case _:
            kind = kind_of_policy(resource)
            if kind is None:
                raise TypeError(f"no event for {type(resource).__name__}")
            return kind.applied_event(resource, at)


def _deleted(kind: str, mesh: str | None, name: str, at: int) -> AnyEvent:
    match kind:
        case "Mesh":
            return MeshDeleted(at=at, name=name)
        case "Dataplane":
            return DataplaneDeregistered(at=at, mesh=mesh or "", name=name)
        case "MeshService":
            return MeshServiceDeleted(at=at, mesh=mesh or "", name=name)
        case "HostnameGenerator":
            return HostnameGeneratorDeleted(at=at, name=name)
        case "MeshMultiZoneService":
            return MeshMultiZoneServiceDeleted(at=at, mesh=mesh or "", name=name)
        case "ZoneIngress":
            return ZoneIngressDeleted(at=at, name=name)
        case _:
            policy = policy_kind(kind)
            if policy is None:
                raise TypeError(f"no deletion event for {kind}")
            return policy.deleted_event(mesh or "", name, at)

