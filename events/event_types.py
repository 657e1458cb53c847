"""The events of the log. Tags are permanent: never rename one, never change a field's type.

A breaking change is a new event type plus an upcaster (`events.codec`). Every event carries
`at`, the time (Unix milliseconds) the command side decided it; folds read time from here and
never from the wall clock (DESIGN.md invariant 4).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Generic, Literal, TypeVar

from msgspec import Struct

from events.resources import (
    Dataplane,
    HostnameGenerator,
    Mesh,
    MeshCircuitBreaker,
    MeshHTTPRoute,
    MeshLoadBalancingStrategy,
    MeshMultiZoneService,
    MeshRetry,
    MeshService,
    MeshTimeout,
    MeshTrafficPermission,
    ServiceKind,
    ZoneIngress,
)

__all__ = [
    "AnyEvent",
    "CaCreated",
    "ClockTicked",
    "DataplaneDeregistered",
    "DataplaneRegistered",
    "Event",
    "GracePeriodConfigured",
    "GracePeriodKind",
    "HostnameGeneratorApplied",
    "HostnameGeneratorDeleted",
    "IpamConfigured",
    "MeshApplied",
    "MeshCircuitBreakerApplied",
    "MeshCircuitBreakerDeleted",
    "MeshDeleted",
    "MeshHTTPRouteApplied",
    "MeshHTTPRouteDeleted",
    "MeshLoadBalancingStrategyApplied",
    "MeshLoadBalancingStrategyDeleted",
    "MeshMultiZoneServiceApplied",
    "MeshMultiZoneServiceDeleted",
    "MeshRetryApplied",
    "MeshRetryDeleted",
    "MeshServiceApplied",
    "MeshServiceDeleted",
    "MeshTimeoutApplied",
    "MeshTimeoutDeleted",
    "MeshTrafficPermissionApplied",
    "MeshTrafficPermissionDeleted",
    "PolicyApplied",
    "PolicyDeleted",
    "SequenceSkipped",
    "SigningKeyCreated",
    "SigningKeyRetired",
    "TokenPurpose",
    "TokenRevoked",
    "ZoneApplied",
    "ZoneDeleted",
    "ZoneIngressDeleted",
    "ZoneIngressRegistered",
    "ca_purpose",
    "now_ms",
    "rfc3339",
]


def now_ms() -> int:
    """The wall clock in the unit of `Event.at` (Unix milliseconds), for the command side and
    the processes; never read by a fold."""
    return time.time_ns() // 1_000_000


def rfc3339(ms: int) -> str:
    """Unix milliseconds (an `at`) as RFC 3339 UTC text, as documents and messages show it."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


class Event(Struct, frozen=True, kw_only=True, tag_field="event", omit_defaults=True,
            gc=False):
    """Not tracked by the cyclic garbage collector (`gc=False`, inherited): a frozen value
    cannot form a reference cycle, and a replay decodes one per stored message."""

    at: int
    """When the command side decided the event, in Unix milliseconds."""


class MeshApplied(Event, frozen=True, tag="mesh.applied"):
    mesh: Mesh


class MeshDeleted(Event, frozen=True, tag="mesh.deleted"):
    name: str


class DataplaneRegistered(Event, frozen=True, tag="dataplane.registered"):
    """A Dataplane was created or changed (through the API, or by the proxy itself)."""

    dataplane: Dataplane
    origin: Literal["api", "proxy"] = "api"


class DataplaneDeregistered(Event, frozen=True, tag="dataplane.deregistered"):
    mesh: str
    name: str


class MeshServiceApplied(Event, frozen=True, tag="meshservice.applied"):
    meshservice: MeshService


class MeshServiceDeleted(Event, frozen=True, tag="meshservice.deleted"):
    mesh: str
    name: str


class IpamConfigured(Event, frozen=True, tag="ipam.configured"):
    """The CIDR new VIPs of `kind` come from. Existing VIPs never move (invariant 6)."""

    kind: ServiceKind
    cidr: str


class HostnameGeneratorApplied(Event, frozen=True, tag="hostnamegenerator.applied"):
    hostname_generator: HostnameGenerator


class HostnameGeneratorDeleted(Event, frozen=True, tag="hostnamegenerator.deleted"):
    name: str


GracePeriodKind = Literal["MeshService"]
"""The kinds of resource a grace period is recorded for: generated MeshServices."""


class GracePeriodConfigured(Event, frozen=True, tag="graceperiod.configured"):
    """How long a generated MeshService of `kind` outlives its last Dataplane (Kuma: 1 h).
    Applies to services that lose their last Dataplane after this event."""

    grace_period_ms: int
    kind: GracePeriodKind = "MeshService"


class CaCreated(Event, frozen=True, tag="ca.created"):
    """The certificate authority of `mesh`'s mTLS backend `backend`: made by the command side
    (builtin) or given by the operator (provided), recorded once so that every replay and
    every replica uses this one (Kuma's outages came from CAs made again on restart)."""

    mesh: str
    backend: str
    type: Literal["builtin", "provided"]
    cert: str
    """The CA certificate, PEM."""
    key: str
    """The CA's private key (PKCS#8 PEM) sealed with the control plane's secret key
    (`events.identity.SecretKey`, purpose `ca_purpose(mesh, backend)`): never in the clear."""


def ca_purpose(mesh: str, backend: str) -> str:
    """What a CA key is sealed for: a sealed key copied to another mesh does not open."""
    return f"ca:{mesh}/{backend}"


_P = TypeVar("_P", MeshTrafficPermission, MeshTimeout, MeshRetry, MeshCircuitBreaker,
             MeshHTTPRoute, MeshLoadBalancingStrategy)


class PolicyApplied(Event, Generic[_P], frozen=True):
    """A policy of one kind was created or changed: the base of every kind's `...Applied`
    (`events.policy_kinds` declares the kinds). Fields as every such event always had them,
    so a subclass encodes as it did before the base existed."""

    policy: _P


class PolicyDeleted(Event, frozen=True):
    """A policy of one kind was deleted: the base of every kind's `...Deleted`."""

    mesh: str
    name: str


class MeshTrafficPermissionApplied(PolicyApplied[MeshTrafficPermission], frozen=True,
                                   tag="meshtrafficpermission.applied"):
    pass


class MeshTrafficPermissionDeleted(PolicyDeleted, frozen=True,
                                   tag="meshtrafficpermission.deleted"):
    pass


class MeshTimeoutApplied(PolicyApplied[MeshTimeout], frozen=True, tag="meshtimeout.applied"):
    pass


class MeshTimeoutDeleted(PolicyDeleted, frozen=True, tag="meshtimeout.deleted"):
    pass


class MeshRetryApplied(PolicyApplied[MeshRetry], frozen=True, tag="meshretry.applied"):
    pass


class MeshRetryDeleted(PolicyDeleted, frozen=True, tag="meshretry.deleted"):
    pass


class MeshCircuitBreakerApplied(PolicyApplied[MeshCircuitBreaker], frozen=True,
                                tag="meshcircuitbreaker.applied"):
    pass


class MeshCircuitBreakerDeleted(PolicyDeleted, frozen=True, tag="meshcircuitbreaker.deleted"):
    pass


class MeshHTTPRouteApplied(PolicyApplied[MeshHTTPRoute], frozen=True,
                           tag="meshhttproute.applied"):
    pass


class MeshHTTPRouteDeleted(PolicyDeleted, frozen=True, tag="meshhttproute.deleted"):
    pass


class MeshLoadBalancingStrategyApplied(PolicyApplied[MeshLoadBalancingStrategy], frozen=True,
                                       tag="meshloadbalancingstrategy.applied"):
    pass


class MeshLoadBalancingStrategyDeleted(PolicyDeleted, frozen=True,
                                       tag="meshloadbalancingstrategy.deleted"):
    pass


class MeshMultiZoneServiceApplied(Event, frozen=True, tag="meshmultizoneservice.applied"):
    meshmultizoneservice: MeshMultiZoneService


class MeshMultiZoneServiceDeleted(Event, frozen=True, tag="meshmultizoneservice.deleted"):
    mesh: str
    name: str


class ZoneIngressRegistered(Event, frozen=True, tag="zoneingress.registered"):
    """A zone's ZoneIngress was created or changed (by the zone it belongs to)."""

    zoneingress: ZoneIngress


class ZoneIngressDeleted(Event, frozen=True, tag="zoneingress.deleted"):
    name: str


class ClockTicked(Event, frozen=True, tag="clock.ticked"):
    """Time passed: `at` is due time of a pending expiry (a generated MeshService's grace
    period, a workload certificate's renewal). Appended by a projector, so that expiry is
    folded from the log, not the wall clock (invariant 4); any event with a later `at` has
    the same effect."""


TokenPurpose = Literal["user-token", "dataplane-token", "zone-token"]
"""What a signing key signs: user tokens (the HTTP API, one global key), dataplane tokens
(proxies on xDS, one key per mesh) or zone tokens (zone ingresses on xDS, one key per zone
control plane). Kuma's names."""


class SigningKeyCreated(Event, frozen=True, tag="signingkey.created"):
    """A key that signs tokens of `purpose`, created once and recorded, so that a restart or
    another replica signs and verifies with this very key (Kuma re-made its keys on a restart
    with an in-memory store, and every token failed: kuma#3762). EC P-256, for ES256."""

    purpose: TokenPurpose
    serial: int
    """The key's number within (purpose, mesh); a token's `kid` names it."""
    public_key: str
    """PEM (SubjectPublicKeyInfo): what gateways verify with."""
    private_key: str
    """PKCS#8 PEM sealed with the control plane's secret key (`events.identity.SecretKey`),
    purpose `signingkey:<purpose>/<mesh or _>/<serial>`; never in the clear, never in a read
    model."""
    mesh: str | None = None
    """The mesh of a dataplane-token key; None for the user-token and zone-token keys."""


class SigningKeyRetired(Event, frozen=True, tag="signingkey.retired"):
    """The key `<purpose>/<mesh or _>/<serial>` is out of service: every token it signed is
    refused from now on, and the open xDS streams that hold one end (Kuma deletes the key's
    secret, `dataplane-token-signing-key-<mesh>-<serial>`). Appended on the key's own subject,
    after its `SigningKeyCreated`; never for the newest serial of (purpose, mesh), which signs
    the new tokens."""

    purpose: TokenPurpose
    serial: int
    mesh: str | None = None


class TokenRevoked(Event, frozen=True, tag="token.revoked"):
    """The token `jti` of `purpose` (in `mesh`) is refused from now on; open xDS streams that
    hold it are ended."""

    purpose: TokenPurpose
    jti: str
    expires_at: int = 0
    """When the token expires (Unix ms), after which the revocation says nothing more (the
    fold drops it `events.identity.REVOCATION_KEPT_AFTER_EXPIRY_MS` later); 0: unknown
    (revoked by its id alone), kept for ever."""
    mesh: str | None = None


class ZoneApplied(Event, frozen=True, tag="zone.applied"):
    """A zone control plane joined the global one, or an operator changed its `enabled` flag
    (Kuma's `Zone` resource, kept on global's subject `meshlog.ev._global.zone._.<name>`;
    zones see it through their source of global's stream). A disabled zone's resources stop
    reaching the others."""

    name: str
    enabled: bool = True
    install: str = ""
    """The install whose events the logs hold: the creation time of the zone's event stream
    when it first registered (carried by every later Zone event; "" from releases before)."""
    refused_install: str = ""
    """Another install that registered under this name (its event stream's creation time):
    refused, as global's source would resume it after the old install's last sequence
    (skipping its first events) and keep the old install's resources. The zone's resources
    are hidden and not sourced while set (`events.commands.zones`)."""


class ZoneDeleted(Event, frozen=True, tag="zone.deleted"):
    """An offline zone was removed: what it synced goes with it, everywhere."""

    name: str
    install: str = ""
    """As `ZoneApplied.install`: kept, the logs still hold that install's events."""


class SequenceSkipped(Event, frozen=True, tag="sequence.skipped"):
    """An operator's decision: the event at stream sequence `seq` of this log (on `subject`),
    which no release can decode or apply, is folded as nothing (`meshlog quarantine skip`).
    Appended once, on the sequence's own subject (`events.skip_subject`, expected sequence
    0), by an admin through the API, only for an event that is quarantined or that the API
    cannot decode. The projector honours it only where the event at `seq` is on `subject`
    and cannot be folded: a decision for an event that folds is ignored. The decision itself
    folds as nothing (its time passes, as any event's does)."""

    seq: int
    subject: str
    """The subject of the skipped event, as the decision saw it."""
    reason: str
    """Why, in the operator's words."""
    by: str
    """Who decided: the API caller's user name."""


AnyEvent = (
    MeshApplied
    | MeshDeleted
    | DataplaneRegistered
    | DataplaneDeregistered
    | MeshServiceApplied
    | MeshServiceDeleted
    | IpamConfigured
    | HostnameGeneratorApplied
    | HostnameGeneratorDeleted
    | GracePeriodConfigured
    | ClockTicked
    | CaCreated
    | MeshTrafficPermissionApplied
    | MeshTrafficPermissionDeleted
    | MeshMultiZoneServiceApplied
    | MeshMultiZoneServiceDeleted
    | SigningKeyCreated
    | SigningKeyRetired
    | TokenRevoked
    | ZoneApplied
    | ZoneDeleted
    | ZoneIngressRegistered
    | ZoneIngressDeleted
    | SequenceSkipped
    | MeshTimeoutApplied
    | MeshTimeoutDeleted
    | MeshRetryApplied
    | MeshRetryDeleted
    | MeshCircuitBreakerApplied
    | MeshCircuitBreakerDeleted
    | MeshHTTPRouteApplied
    | MeshHTTPRouteDeleted
    | MeshLoadBalancingStrategyApplied
    | MeshLoadBalancingStrategyDeleted
)
