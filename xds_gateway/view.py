"""`ProjectionView`: a gateway's in-memory copy of the published read models.

Filled from the projection bus: the initial batch makes the view ready; later batches are
applied whole at their checkpoint, so a stream never sees half of a projector batch. Every
applied batch bumps `generation` and sets the events of the streams registered with
`wake_on_change`, then tells `on_revoked` listeners of the revocations it brought and
`on_key_retired` listeners of the signing keys it removed. Token signing keys (public
halves) and revocations are kept for the streams' authentication.

The DNS names that Dataplane and endpoints rows give as addresses are noted in `addresses`
as rows arrive; their answers come from the gateway's resolver, which calls `touch` when an
answer changes, so streams rebuild as they do for a batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeVar

from events import MESH_TRAFFIC_PERMISSION, POLICY_KINDS, PolicyKind
from events.bus.projection_bus import CHECKPOINT_KEY, ProjectionUpdate
from events.resources import MeshScopedResource
from projections import (
    DataplaneRow,
    EndpointsRow,
    IdentityRow,
    MeshMultiZoneServiceRow,
    MeshRow,
    MeshServiceRow,
    PolicyRow,
    RevocationRow,
    SigningKeyRow,
    TrustRow,
    ZoneIngressRow,
    decode_policy_row,
    decode_typed,
)
from xds_gateway.addresses import AddressBook, dataplane_names, endpoint_names

__all__ = ["ProjectionView"]

P = TypeVar("P", bound=MeshScopedResource)
_POLICY_OF_COLLECTION = {kind.collection: kind for kind in POLICY_KINDS}
_OF_INBOUNDS: frozenset[PolicyKind[Any]] = frozenset({MESH_TRAFFIC_PERMISSION})
"""The policy kinds that shape a proxy's own inbounds (`policy_versions`)."""


class ProjectionView:
    def __init__(self) -> None:
        self.generation = 0
        """Bumped by every applied batch and every changed answer for an address name."""
        self.applied_at = 0.0
        """`time.monotonic()` when the last batch was applied or an answer changed (the push
        latency's start)."""
        self.checkpoint = 0
        self.ready = asyncio.Event()
        self.meshes: dict[str, MeshRow] = {}
        """By mesh name: `spec.meshServices.mode` decides what proxies of the mesh get."""
        self.dataplanes: dict[tuple[str, str], DataplaneRow] = {}
        self.meshservices: dict[str, dict[str, MeshServiceRow]] = defaultdict(dict)
        self.endpoints: dict[str, dict[str, EndpointsRow]] = defaultdict(dict)
        self.endpoints_bytes: dict[str, dict[str, bytes]] = defaultdict(dict)
        """The bus's bytes of each endpoints row: a ready-made, content-derived cache key."""
        self.trust: dict[str, TrustRow] = {}
        """By mesh: present when the mesh has mTLS on."""
        self.identities: dict[tuple[str, str], IdentityRow] = {}
        """(mesh, Dataplane): its workload certificate and key."""
        self.policy_versions: dict[str, int] = defaultdict(int)
        """By mesh: bumped when a MeshService comes, goes or changes its selector, or a policy
        of the mesh changes, so that a proxy's inbounds (whose RBAC depends on them) are built
        again only then."""
        self._policies: dict[str, dict[str, dict[str, PolicyRow[Any]]]] = {
            kind.collection: defaultdict(dict) for kind in POLICY_KINDS}
        """By collection (kind), mesh, then policy name: every kind's rows (`policies`)."""
        self.meshmultizoneservices: dict[str, dict[str, MeshMultiZoneServiceRow]] = (
            defaultdict(dict))
        """By mesh, then name: their VIPs, hostnames and the MeshServices that serve them."""
        self.zoneingresses: dict[str, ZoneIngressRow] = {}
        """By name: the ZoneIngresses the log holds (this zone's, and others' once synced)."""
        self.addresses = AddressBook()
        """The DNS names the rows give as addresses, and their answers (`touch` on a change)."""
        self._wakes: set[asyncio.Event] = set()
        self.signing_keys: dict[str, SigningKeyRow] = {}
        """Public token signing keys by kid (`dataplane-token/<mesh>/<serial>`, ...,
        `_global/zone-token/_/<serial>` for global's)."""
        self._kids: dict[tuple[str, str], str] = {}
        """The kid of each `signingkey` row by its key's (first part, rest): what a deleted
        row's key names."""
        self.revocations: dict[tuple[str, str], RevocationRow] = {}
        """Revoked tokens by (mesh or `_`, jti)."""
        self._revoked: list[RevocationRow] = []
        self._on_revoked: set[Callable[[RevocationRow], None]] = set()
        self._retired: list[str] = []
        self._on_key_retired: set[Callable[[str], None]] = set()

    def apply(self, updates: Iterable[ProjectionUpdate]) -> None:
        for key, value in updates:
            if key == CHECKPOINT_KEY:
                if value is not None:
                    self.checkpoint = int(value)
                continue
            collection, _, rest = key.partition("/")
            mesh, _, name = rest.partition("/")
            self._apply_one(collection, mesh, name, value)
        self.touch()
        revoked, self._revoked = self._revoked, []
        for row in revoked:  # once the whole batch is applied
            for listener in list(self._on_revoked):
                listener(row)
        retired, self._retired = self._retired, []
        for kid in retired:
            for key_listener in list(self._on_key_retired):
                key_listener(kid)

    def touch(self) -> None:
        """A new generation: what the rows give Envoy changed (a batch was applied, or an
        address name's answer changed), so every stream builds its snapshot again."""
        self.generation += 1
        self.applied_at = time.monotonic()
        for wake in self._wakes:
            wake.set()

    def _apply_one(self, collection: str, mesh: str, name: str, value: bytes | None) -> None:
        match collection:
            case "mesh":
                # key `mesh/<name>`: the name arrived in `mesh`
                if value is None:
                    self.meshes.pop(mesh, None)
                else:
                    self.meshes[mesh] = decode_typed(MeshRow, value)
            case "dataplane":
                if value is None:
                    self.dataplanes.pop((mesh, name), None)
                    self.addresses.track((collection, mesh, name), {})
                else:
                    dp_row = self.dataplanes[(mesh, name)] = decode_typed(DataplaneRow, value)
                    self.addresses.track((collection, mesh, name), dataplane_names(dp_row))
            case "meshservice":
                old = self.meshservices[mesh].get(name)
                if value is None:
                    self.meshservices[mesh].pop(name, None)
                    new = None
                else:
                    new = self.meshservices[mesh][name] = decode_typed(MeshServiceRow, value)
                # an inbound's RBAC depends on which services select it, not on their status
                # (which changes with every Dataplane's health)
                if (old is None) != (new is None) or (
                        old is not None and new is not None
                        and old.spec.selector != new.spec.selector):
                    self.policy_versions[mesh] += 1
            case "endpoints":
                if value is None:
                    self.endpoints[mesh].pop(name, None)
                    self.endpoints_bytes[mesh].pop(name, None)
                    self.addresses.track((collection, mesh, name), {})
                else:
                    endpoints = self.endpoints[mesh][name] = decode_typed(EndpointsRow, value)
                    self.endpoints_bytes[mesh][name] = value
                    self.addresses.track((collection, mesh, name), endpoint_names(endpoints))
            case "trust":
                # key `trust/<mesh>`: the mesh arrived in `mesh`
                if value is None:
                    self.trust.pop(mesh, None)
                else:
                    self.trust[mesh] = decode_typed(TrustRow, value)
            case "identity":
                if value is None:
                    self.identities.pop((mesh, name), None)
                else:
                    self.identities[(mesh, name)] = decode_typed(IdentityRow, value)
            case _ if collection in self._policies:  # every policy kind alike
                kind = _POLICY_OF_COLLECTION[collection]
                if kind in _OF_INBOUNDS:
                    self.policy_versions[mesh] += 1
                if value is None:
                    self._policies[collection][mesh].pop(name, None)
                else:
                    self._policies[collection][mesh][name] = decode_policy_row(kind, value)
            case "meshmultizoneservice":
                if value is None:
                    self.meshmultizoneservices[mesh].pop(name, None)
                else:
                    self.meshmultizoneservices[mesh][name] = decode_typed(
                        MeshMultiZoneServiceRow, value)
            case "zoneingress":
                # key `zoneingress/<name>`: the name arrived in `mesh`
                if value is None:
                    self.zoneingresses.pop(mesh, None)
                else:
                    self.zoneingresses[mesh] = decode_typed(ZoneIngressRow, value)
            case "signingkey":
                # a key never changes (its kid names one subject, appended once); a retired
                # key's row is deleted (key `signingkey/<mesh, _ or _global>/<purpose>-<serial>`,
                # `projections.signing_key_row_key`)
                if value is not None:
                    row = decode_typed(SigningKeyRow, value)
                    self.signing_keys[row.kid] = row
                    self._kids[(mesh, name)] = row.kid
                else:
                    kid = self._kids.pop((mesh, name), None)
                    if kid is not None and self.signing_keys.pop(kid, None) is not None:
                        self._retired.append(kid)
            case "revocation":
                if value is None:
                    self.revocations.pop((mesh, name), None)
                elif (mesh, name) not in self.revocations:
                    revocation = decode_typed(RevocationRow, value)
                    self.revocations[(mesh, name)] = revocation
                    self._revoked.append(revocation)
            case _:
                pass  # future collections: not needed for Envoy config yet

    def policies(self, kind: PolicyKind[P], mesh: str) -> Mapping[str, PolicyRow[P]]:
        """By policy name: the rows of `kind` in `mesh`. A policy of the inbounds
        (MeshTrafficPermission: who may connect, `resources.rbac.inbound_rbac`) bumps
        `policy_versions`; the outbounds' (MeshTimeout, MeshRetry, ...) are part of what
        every snapshot is built from anyway."""
        return self._policies[kind.collection].get(mesh, {})

    def wake_on_change(self, wake: asyncio.Event) -> None:
        """Set `wake` on every applied batch (until `stop_waking`): a stream's loop waits on
        its own event, so a change wakes one task per stream instead of a waiter task too."""
        self._wakes.add(wake)

    def stop_waking(self, wake: asyncio.Event) -> None:
        self._wakes.discard(wake)

    def on_revoked(self, listener: Callable[[RevocationRow], None]) -> None:
        """Call `listener` with each revocation that arrives (after its batch is applied),
        until `stop_on_revoked`: a gateway ends the open streams of a revoked token."""
        self._on_revoked.add(listener)

    def stop_on_revoked(self, listener: Callable[[RevocationRow], None]) -> None:
        self._on_revoked.discard(listener)

    def on_key_retired(self, listener: Callable[[str], None]) -> None:
        """Call `listener` with the kid of each signing key retired (its row deleted, after
        its batch is applied), until `stop_on_key_retired`: a gateway ends the open streams
        whose token that key signed."""
        self._on_key_retired.add(listener)

    def stop_on_key_retired(self, listener: Callable[[str], None]) -> None:
        self._on_key_retired.discard(listener)

    async def follow(self, batches: AsyncIterator[list[ProjectionUpdate]]) -> None:
        """Apply batches from the projection bus forever."""
        async for batch in batches:
            self.apply(batch)
            self.ready.set()
