"""Read-model rows: what projectors write, stores keep, gateways and the API read.

Rows are frozen msgspec Structs, encoded canonically (fixed field order, sorted collections)
so that the same log prefix gives byte-identical rows (DESIGN.md invariant 4). Times are Unix
milliseconds taken from events.
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

import msgspec
from msgspec import Struct

from events import (
    POLICY_KINDS,
    Dataplane,
    HostnameGenerator,
    Mesh,
    MeshServicePort,
    PolicyKind,
    ZoneIngress,
)
from events.identity import REVOCATION_KEPT_AFTER_EXPIRY_MS, KeyId
from events.resources import MeshMultiZoneServiceSpec, MeshScopedResource, MeshServiceSpec

__all__ = [
    "COLLECTIONS",
    "PUBLISHED",
    "Address",
    "CaRow",
    "Condition",
    "DataplaneProxies",
    "DataplaneRow",
    "Endpoint",
    "EndpointsRow",
    "GracePeriodRow",
    "HostnameGeneratorRef",
    "HostnameGeneratorRow",
    "HostnameGeneratorStatus",
    "IdentityRow",
    "IpamRow",
    "MatchedMeshService",
    "MeshMultiZoneServiceRow",
    "MeshMultiZoneServiceStatus",
    "MeshRow",
    "MeshServiceRow",
    "MeshServiceStatus",
    "MzsBackend",
    "PolicyRow",
    "PortEndpoints",
    "QuarantinedEvent",
    "RevocationRow",
    "Row",
    "RowMeta",
    "SigningKeyRow",
    "SkippedEvent",
    "TrustRow",
    "VipRow",
    "ZoneIngressRow",
    "ZoneRow",
    "decode_policy_row",
    "decode_row",
    "decode_typed",
    "encode_row",
    "signing_key_row_key",
]


class Row(Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True, gc=False):
    """The base of every read-model row and of the Structs rows are made of. Not tracked by
    the cyclic garbage collector (`gc=False`, inherited): frozen values cannot form a reference
    cycle, and the projection state holds one per row and part of a row, which the collector
    would otherwise scan again and again while a rebuild makes new ones."""


class RowMeta(Row, frozen=True):
    version: int
    """Stream sequence of the event that last changed the resource (its optimistic-lock token)."""
    creation_time: int
    modification_time: int


class MeshRow(Row, frozen=True):
    mesh: Mesh
    meta: RowMeta


class Condition(Row, frozen=True):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""


class DataplaneRow(Row, frozen=True):
    dataplane: Dataplane
    meta: RowMeta
    first_seq: int
    """Sequence of the first registration: "oldest Dataplane" in the port-conflict rule."""
    origin: Literal["api", "proxy"] = "api"
    conditions: list[Condition] = []
    """What the control plane has to say about it, e.g. an inbound whose service name cannot
    become a MeshService (`MeshServiceGenerated=False`, rendered as `status.conditions`)."""


class Vip(Row, frozen=True):
    ip: str


class HostnameGeneratorRef(Row, frozen=True):
    core_name: str


class Address(Row, frozen=True):
    hostname: str
    origin: str
    hostname_generator_ref: HostnameGeneratorRef


class HostnameGeneratorStatus(Row, frozen=True):
    hostname_generator_ref: HostnameGeneratorRef
    conditions: list[Condition]


class DataplaneProxies(Row, frozen=True, omit_defaults=False):
    total: int = 0
    connected: int = 0
    healthy: int = 0


class MeshServiceStatus(Row, frozen=True):
    state: Literal["Available", "Unavailable"] = "Unavailable"
    vips: list[Vip] = []
    addresses: list[Address] = []
    hostname_generators: list[HostnameGeneratorStatus] = []
    dataplane_proxies: DataplaneProxies = DataplaneProxies()
    conditions: list[Condition] = []


class MeshServiceRow(Row, frozen=True):
    mesh: str
    name: str
    labels: dict[str, str]
    spec: MeshServiceSpec
    status: MeshServiceStatus
    meta: RowMeta
    origin: Literal["user", "generated"]
    expires_at: int | None = None
    """A generated MeshService whose last Dataplane left goes at this time (Unix ms, from the
    log) unless a Dataplane of its service comes back first: Kuma's grace period."""


class Endpoint(Row, frozen=True):
    address: str
    port: int
    dataplane: str


class PortEndpoints(Row, frozen=True):
    port: MeshServicePort
    endpoints: list[Endpoint]


class EndpointsRow(Row, frozen=True):
    mesh: str
    name: str
    zone: str
    ports: list[PortEndpoints]
    through_ingress: list[Endpoint] | None = None
    """A remote MeshService with the mesh's mTLS on: the ingresses of its zone (advertised
    address and port, `dataplane` naming the ingress), which every port of it is reached
    through, by SNI (`projections.zoneingress`). None: reached at `ports`' endpoints."""


class HostnameGeneratorRow(Row, frozen=True):
    generator: HostnameGenerator
    meta: RowMeta
    origin: Literal["default", "user"]
    """`default`: one of the zone's implicit generators, not (or no longer) overridden."""


P = TypeVar("P", bound=MeshScopedResource)


class PolicyRow(Row, Generic[P], frozen=True):
    """A policy of any kind (`events.policy_kinds`) as applied, with the labels the control
    plane computes (`kuma.io/mesh`, `kuma.io/origin`, `kuma.io/zone`, `kuma.io/env`); in its
    kind's collection (`PolicyKind.collection`), keyed `<mesh>/<name>`. Encoded as each kind's
    own row class was before this one served them all (the same fields, no tag)."""

    policy: P
    meta: RowMeta


class MatchedMeshService(Row, frozen=True, omit_defaults=False):
    """A MeshService a MeshMultiZoneService selects, as Kuma names it in the status: its
    display name, namespace (k8s only, else ""), zone ("" for one of global) and mesh."""

    name: str
    namespace: str
    zone: str
    mesh: str


class MeshMultiZoneServiceStatus(Row, frozen=True):
    """Kuma's MeshMultiZoneService status, derived in each control plane's fold."""

    addresses: list[Address] = []
    vips: list[Vip] = []
    mesh_services: list[MatchedMeshService] = []
    """Every MeshService of the mesh the selector matches, local and remote, available or
    not, sorted by name, namespace, zone, mesh."""
    hostname_generators: list[HostnameGeneratorStatus] = []
    conditions: list[Condition] = []


class MzsBackend(Row, frozen=True):
    """A MeshService whose endpoints serve a MeshMultiZoneService here, at an Envoy
    priority: 0 for one of this zone (preferred), 1 for another zone's (failover)."""

    name: str
    """The MeshService row's name (its key in the mesh)."""
    zone: str
    priority: int


class MeshMultiZoneServiceRow(Row, frozen=True):
    mesh: str
    name: str
    labels: dict[str, str]
    """The resource's labels with the control plane's (`kuma.io/mesh`, `kuma.io/origin`,
    `kuma.io/display-name`, ...)."""
    spec: MeshMultiZoneServiceSpec
    status: MeshMultiZoneServiceStatus
    meta: RowMeta
    backends: list[MzsBackend] = []
    """The matched MeshServices that serve it from this zone's point of view (local ones, and
    remote ones whose `spec.state` is Available), sorted by priority, zone, name: what a
    gateway builds its endpoints from. Not part of Kuma's status; the API does not show it."""


class ZoneIngressRow(Row, frozen=True):
    """A ZoneIngress as registered, its `zone` pinned to the zone that wrote it and its
    labels the control plane's (`kuma.io/origin`, `kuma.io/zone`)."""

    zoneingress: ZoneIngress
    meta: RowMeta
    synced: bool = False
    """Another zone's, folded under its synced name: how this zone reaches that zone's
    services; never served to a proxy here (an ingress gets its config from its own zone)."""


class GracePeriodRow(Row, frozen=True):
    kind: str
    grace_period_ms: int
    zone: str = ""
    """The other zone whose setting it is (`projections.remote`); "" for this log's own."""


class VipRow(Row, frozen=True):
    ip: str


class IpamRow(Row, frozen=True):
    kind: str
    cidr: str
    next_offset: int
    """Next-fit cursor: offset from the network address of the next address to try."""


class CaRow(Row, frozen=True):
    """A mesh backend's CA as the log recorded it; stays in the store (its key is sealed,
    and gateways need only the certificate, in `TrustRow`)."""

    mesh: str
    backend: str
    type: str
    cert: str
    key: str
    """Sealed (`events.identity.SecretKey`), as in the event."""
    meta: RowMeta
    synced: bool = False
    """Recorded by global and synced into this zone's log (a zone makes no CA): sealed with
    global's secret key, which the zone must run with. One it cannot open leaves the mesh's
    proxies here without certificates and is reported; it does not halt the fold."""


class TrustRow(Row, frozen=True):
    """A mesh with mTLS on: who issues its workload certificates and whom its proxies trust.
    Absent when mTLS is off (no enabled backend, or its CA not recorded)."""

    mesh: str
    backend: str
    """The enabled backend: its CA issues."""
    mode: Literal["STRICT", "PERMISSIVE"]
    roots: list[str]
    """PEM of the CAs of every backend the Mesh lists (the enabled one first): proxies trust
    them all, so moving to another backend drops no connection."""
    ca_version: int
    """Sequence of the issuing CA's event: a new CA re-issues every certificate."""
    expiration_ms: int
    """`dpCert.rotation.expiration`: how long a workload certificate lives."""
    anchor: int
    """When this issuer and expiration took effect (an event's `at`): every certificate's
    first window starts there, and each Dataplane's renewals count from it
    (`projections.identity.window_start`: its renewal group's)."""
    clock: int = msgspec.field(name="windowStart")
    """The log's time as of which the windows of groups holding a Dataplane hold: the `at` of
    the last renewal of one, or of a Dataplane joining an empty one (or `anchor`). Stored
    under fold version 6's name, `windowStart` (its one window for the whole mesh, a time the
    windows hold at too), so the releases before and after read each other's rows: a gateway
    in a rolling upgrade, a projector resuming a store of the release before."""
    renew_at: int
    """The next time a group holding a Dataplane moves to its next window (none: `clock`)."""


class IdentityRow(Row, frozen=True):
    """A Dataplane's workload certificate and key (PEM) for its proxy, by SDS. Issued once
    per window by the projector and shared: every gateway sends a proxy the same secret."""

    mesh: str
    dataplane: str
    backend: str
    ca_version: int
    uris: list[str]
    cert: str
    key: str
    not_before: int
    not_after: int


class QuarantinedEvent(Row, frozen=True):
    """An event the projector could not decode or apply; it stopped in front of it."""

    seq: int
    subject: str
    reason: str
    data: str
    """The stored payload as text (lossless for JSON; invalid UTF-8 shown escaped)."""
    projector: str


class SkippedEvent(Row, frozen=True):
    """An event the projector folded as nothing, by an operator's decision (`SequenceSkipped`,
    `meshlog quarantine skip`): it could not be decoded or applied. Written when the fold
    passes `seq`, so a replay that skips it too writes the same row (invariant 4)."""

    seq: int
    subject: str
    reason: str
    """The operator's."""
    by: str
    decided_at: int
    """Unix ms: the decision's `at`."""
    decision_seq: int
    """Where the decision is in the log."""


class SigningKeyRow(Row, frozen=True):
    """The public half of a token signing key (`SigningKeyCreated`): what gateways and the API
    verify tokens with, until `SigningKeyRetired` removes the row (a token whose kid names no
    row is refused). The sealed private half stays in the log, never in a read model."""

    kid: str
    """`<purpose>/<mesh or _>/<serial>` (`_global/zone-token/_/<serial>` for global's
    zone-token keys), as a token's header names it."""
    purpose: str
    serial: int
    public_key: str
    """PEM."""
    created_at: int
    mesh: str | None = None


def signing_key_row_key(kid: KeyId) -> str:
    """The `signingkey` row key of the key `kid`: `<mesh or _>/<purpose>-<serial>`, or
    `<issuer>/<purpose>-<serial>` for a key that names its control plane (global's zone-token
    keys: `_global/zone-token-1`, beside a zone's own `_/zone-token-1`; no mesh is named
    `_global`, an underscore is not valid in a name)."""
    return f"{kid.issuer or kid.mesh or '_'}/{kid.purpose}-{kid.serial}"


class RevocationRow(Row, frozen=True):
    """A revoked token (`TokenRevoked`): refused, and its open xDS streams ended."""

    purpose: str
    jti: str
    revoked_at: int
    expires_at: int = 0
    """Unix ms; 0: unknown. The fold removes the row at `drop_at`."""
    mesh: str | None = None

    def drop_at(self) -> int | None:
        """When the fold removes this row: `REVOCATION_KEPT_AFTER_EXPIRY_MS` after its token's
        expiry, before the first event at or after that time (None: its expiry is unknown, it
        stays for ever). By then the token is refused as expired anyway, also by a verifier
        whose clock runs that much behind the control plane's."""
        return (self.expires_at + REVOCATION_KEPT_AFTER_EXPIRY_MS if self.expires_at > 0
                else None)


class ZoneRow(Row, frozen=True):
    """A zone that joined the global control plane (`ZoneApplied`), in the log of global and
    of every zone (each sources global's stream)."""

    name: str
    enabled: bool
    meta: RowMeta
    deleted: bool = False
    """A tombstone: the zone was deleted; what it synced is kept out of sight (`parked*`
    rows, `projections.remote`), its events still in flight folded there too, until it
    registers again."""
    install: str = ""
    """The install whose events the logs hold (`ZoneApplied.install`)."""
    refused_install: str = ""
    """Another install registered under the name, refused: what the zone synced is kept out
    of sight as for a deleted zone, and its events folded meanwhile are dropped
    (`projections.remote`)."""


COLLECTIONS: dict[str, type[Row]] = {
    "mesh": MeshRow,
    "dataplane": DataplaneRow,
    "meshservice": MeshServiceRow,
    "endpoints": EndpointsRow,
    "vip": VipRow,
    "ipam": IpamRow,
    "hostnamegenerator": HostnameGeneratorRow,
    "graceperiod": GracePeriodRow,
    "quarantine": QuarantinedEvent,
    "skipped": SkippedEvent,
    "ca": CaRow,
    "trust": TrustRow,
    "identity": IdentityRow,
    **{kind.collection: PolicyRow for kind in POLICY_KINDS},  # each decoded as its kind's
    "signingkey": SigningKeyRow,
    "revocation": RevocationRow,
    "meshmultizoneservice": MeshMultiZoneServiceRow,
    "zone": ZoneRow,
    "remotedataplane": DataplaneRow,
    "remotemeshservice": MeshServiceRow,
    "zoneingress": ZoneIngressRow,
    "parkeddataplane": DataplaneRow,
    "parkedmeshservice": MeshServiceRow,
    "parkedzoneingress": ZoneIngressRow,
}
PUBLISHED = ("mesh", "dataplane", "meshservice", "endpoints", "trust", "identity",
             "signingkey", "revocation", "meshmultizoneservice", "zoneingress",
             *(kind.collection for kind in POLICY_KINDS))
"""Collections gateways need; VIP and IPAM bookkeeping stays in the store. Gateways verify
dataplane tokens with the public keys and revocations alone (never a private key).

`remotedataplane` and `remotemeshservice` are what other zones wrote, as they wrote it (under
their synced names, `projections.remote`): inputs of the remote MeshServices in `meshservice`,
never endpoints or listeners of this zone's proxies, so they are not published. (Global's API
reads `remotedataplane` from the store: the Dataplanes it lists.) `parkeddataplane`,
`parkedmeshservice` and `parkedzoneingress` are a deleted zone's `remotedataplane`,
`remotemeshservice` and synced `zoneingress` rows, out of sight until it registers again
(`projections.remote`)."""

R = TypeVar("R", bound=Row)

_encoder = msgspec.json.Encoder(order="deterministic")
# a policy collection's decoder takes its kind's schema only (the parameter is a value here)
_DECODED_AS = {k.collection: PolicyRow[k.schema] for k in POLICY_KINDS}  # type: ignore[name-defined]
_decoders = {name: msgspec.json.Decoder(_DECODED_AS.get(name, cls))
             for name, cls in COLLECTIONS.items()}


def encode_row(row: Row) -> bytes:
    return _encoder.encode(row)


def decode_row(collection: str, data: bytes) -> Row:
    return _decoders[collection].decode(data)


def decode_typed(row_type: type[R], data: bytes) -> R:
    """A row whose type the caller knows (a gateway's view, the API): typed, with the
    collection's own decoder."""
    if row_type not in _COLLECTION_OF:
        raise TypeError(f"{row_type.__name__} rows are decoded by their kind")
    decoded = _decoders[_COLLECTION_OF[row_type]].decode(data)
    if not isinstance(decoded, row_type):  # each collection has one row type
        raise TypeError(f"{row_type.__name__} decoded as {type(decoded).__name__}")
    return decoded


def decode_policy_row(kind: PolicyKind[P], data: bytes) -> PolicyRow[P]:
    """A row of `kind`'s collection, typed."""
    decoded = _decoders[kind.collection].decode(data)
    if not isinstance(decoded, PolicyRow) or not isinstance(decoded.policy, kind.schema):
        raise TypeError(f"{kind.type_name} row decoded as {type(decoded).__name__}")
    return decoded


# `PolicyRow` is every policy kind's: decoded by its kind (`decode_policy_row`), not its type
_COLLECTION_OF: dict[type[Row], str] = {cls: name for name, cls in COLLECTIONS.items()
                                        if cls is not PolicyRow}
