"""Event histories for fold tests, and a fold driver that processes batches like the projector.

`fold` mirrors `Projector.run/_fold` without the bus and the store: every event goes through
the wire codec, each batch is folded event by event, then `derive_stale` and `take_changes`
run once per batch. `restart` rebuilds the state from its persisted rows, as a projector does
from its store after a crash.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypeVar

import msgspec
from hypothesis import strategies as st

from events import (
    SCHEMA_VERSION,
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
    MeshMultiZoneService,
    MeshMultiZoneServiceApplied,
    MeshMultiZoneServiceDeleted,
    MeshRetry,
    MeshRetryApplied,
    MeshRetryDeleted,
    MeshService,
    MeshServiceApplied,
    MeshServiceDeleted,
    MeshTimeout,
    MeshTimeoutApplied,
    MeshTimeoutDeleted,
    MeshTrafficPermission,
    MeshTrafficPermissionApplied,
    MeshTrafficPermissionDeleted,
    PolicyKind,
    Provenance,
    ServiceKind,
    TokenRevoked,
    ca_purpose,
    decode_event,
    decode_resource,
    encode_event,
    kind_of_policy,
    provenance_of,
    resource_subject,
)
from events.identity import SecretKey
from events.identity.pki import create_ca
from events.log import Record
from events.readiness import readiness_change
from events.resources import Health, Mesh, MeshScopedResource
from projections.derive import derive_stale
from projections.fold import apply_event
from projections.readiness import BatchReadiness
from projections.state import ProjectionState
from projections.views import EndpointsRow, MeshServiceRow, Row, VipRow, decode_row, decode_typed

ZONE = "zone-1"
PROVENANCE = Provenance(zone=ZONE, origin="zone")
SERVICE_TAG = "kuma.io/service"
HOUR = 3_600_000
JTIS = ("0b4c7f2e-9a59-4f7c-8a53-2f4f3a7d2f10", "5d1e6c3a-2b7f-4e0d-9c8a-1f2e3d4c5b6a",
        "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a")
Rows = list[tuple[str, str, bytes]]
R = TypeVar("R", bound=Row)


# --- resources ------------------------------------------------------------------------------


def inbound(
    port: int, service: str, *, name: str | None = None, protocol: str | None = None,
    tags: dict[str, str] | None = None, ready: bool | None = None, state: str | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    raw: dict[str, Any] = {"port": port, "tags": {SERVICE_TAG: service, **(tags or {})}}
    if name is not None:
        raw["name"] = name
    if protocol is not None:
        raw["protocol"] = protocol
    if ready is not None:
        raw["health"] = {"ready": ready}
    if state is not None:
        raw["state"] = state
    if address is not None:
        raw["address"] = address
    return raw


def dataplane(
    mesh: str, name: str, address: str, *inbounds: dict[str, Any],
    advertised: str | None = None,
) -> Dataplane:
    networking: dict[str, Any] = {"address": address, "inbound": list(inbounds)}
    if advertised is not None:
        networking["advertisedAddress"] = advertised
    resource = decode_resource(
        {"type": "Dataplane", "mesh": mesh, "name": name, "networking": networking})
    assert isinstance(resource, Dataplane)
    return resource


def ms_port(
    port: int, *, target: int | str | None = None, name: str | None = None,
    protocol: str | None = None,
) -> dict[str, Any]:
    raw: dict[str, Any] = {"port": port}
    if target is not None:
        raw["targetPort"] = target
    if name is not None:
        raw["name"] = name
    if protocol is not None:
        raw["appProtocol"] = protocol
    return raw


def meshservice(
    mesh: str, name: str, *ports: dict[str, Any], selector: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> MeshService:
    raw: dict[str, Any] = {
        "type": "MeshService", "mesh": mesh, "name": name,
        "spec": {"selector": {"dataplaneTags": selector or {SERVICE_TAG: name}},
                 "ports": list(ports)},
    }
    if labels:
        raw["labels"] = labels
    resource = decode_resource(raw)
    assert isinstance(resource, MeshService)
    return resource


def generator(name: str, template: str, match_labels: dict[str, str] | None = None, *,
              labels: dict[str, str] | None = None) -> HostnameGenerator:
    raw: dict[str, Any] = {
        "type": "HostnameGenerator", "name": name,
        "spec": {"template": template,
                 "selector": {"meshService": {"matchLabels": match_labels or {}}}},
    }
    if labels:
        raw["labels"] = labels
    resource = decode_resource(raw)
    assert isinstance(resource, HostnameGenerator)
    return resource


def permission(mesh: str, name: str, *sources: tuple[dict[str, Any], str],
               target: dict[str, Any] | None = None,
               labels: dict[str, str] | None = None) -> MeshTrafficPermission:
    """A MeshTrafficPermission: `sources` are (from-targetRef, action) pairs."""
    spec: dict[str, Any] = {"from": [{"targetRef": ref, "default": {"action": action}}
                                     for ref, action in sources]}
    if target is not None:
        spec["targetRef"] = target
    raw: dict[str, Any] = {"type": "MeshTrafficPermission", "mesh": mesh, "name": name,
                           "spec": spec}
    if labels:
        raw["labels"] = labels
    resource = decode_resource(raw)
    assert isinstance(resource, MeshTrafficPermission)
    return resource


def timeout(mesh: str, name: str, *to: tuple[dict[str, Any], dict[str, Any]],
            target: dict[str, Any] | None = None,
            labels: dict[str, str] | None = None) -> MeshTimeout:
    """A MeshTimeout: `to` are (to-targetRef, default) pairs."""
    spec: dict[str, Any] = {"to": [{"targetRef": ref, "default": conf} for ref, conf in to]}
    if target is not None:
        spec["targetRef"] = target
    raw: dict[str, Any] = {"type": "MeshTimeout", "mesh": mesh, "name": name, "spec": spec}
    if labels:
        raw["labels"] = labels
    resource = decode_resource(raw)
    assert isinstance(resource, MeshTimeout)
    return resource


def retry(mesh: str, name: str, *to: tuple[dict[str, Any], dict[str, Any]],
          target: dict[str, Any] | None = None) -> MeshRetry:
    """A MeshRetry: `to` are (to-targetRef, default) pairs."""
    spec: dict[str, Any] = {"to": [{"targetRef": ref, "default": conf} for ref, conf in to]}
    if target is not None:
        spec["targetRef"] = target
    resource = decode_resource({"type": "MeshRetry", "mesh": mesh, "name": name,
                                "spec": spec})
    assert isinstance(resource, MeshRetry)
    return resource


def multizone_service(mesh: str, name: str, match_labels: dict[str, str], *ports: int,
                      labels: dict[str, str] | None = None) -> MeshMultiZoneService:
    raw: dict[str, Any] = {
        "type": "MeshMultiZoneService", "mesh": mesh, "name": name,
        "spec": {"selector": {"meshService": {"matchLabels": match_labels}},
                 "ports": [{"port": p} for p in ports or (6379,)]}}
    if labels:
        raw["labels"] = labels
    resource = decode_resource(raw)
    assert isinstance(resource, MeshMultiZoneService)
    return resource


# --- histories ------------------------------------------------------------------------------


SECRET_KEY = SecretKey.generate()
"""The projector's secret key in these tests: it opens the CAs `History.mtls` records."""


@functools.cache
def _ca(mesh: str, backend: str) -> tuple[str, str]:
    cert, key = create_ca(mesh, backend, 1_700_000_000_000)
    return cert, SECRET_KEY.seal(key, purpose=ca_purpose(mesh, backend))


class History:
    """An event log under construction; each event is `gap` ms after the previous one."""

    def __init__(self, start: int = 1_700_000_000_000, gap: int = 1000) -> None:
        self.events: list[AnyEvent] = []
        self.gap = gap
        self._at = start
        self._cas: set[tuple[str, str]] = set()

    def _add(self, event: AnyEvent) -> None:
        self.events.append(event)

    def _next_at(self) -> int:
        self._at += self.gap
        return self._at

    def mesh(self, name: str) -> History:
        mesh = decode_resource({"type": "Mesh", "name": name})
        assert isinstance(mesh, Mesh)
        self._add(MeshApplied(at=self._next_at(), mesh=mesh))
        return self

    def register(self, dp: Dataplane, *, origin: Literal["api", "proxy"] = "api") -> History:
        self._add(DataplaneRegistered(at=self._next_at(), dataplane=dp, origin=origin))
        return self

    def flip(self, index: int, ready: bool | None, state: str) -> History:
        """Register again the Dataplane of the `index`-th registration so far, as it was last
        registered, with its first inbound's readiness (`health`, `state`) set: a health
        check's flip (or nothing new, or a registration back after a deregistration)."""
        registrations = [e for e in self.events if isinstance(e, DataplaneRegistered)]
        if not registrations:
            return self
        picked = registrations[index % len(registrations)].dataplane
        last = [e for e in registrations if (e.dataplane.mesh, e.dataplane.name)
                == (picked.mesh, picked.name)][-1]
        inbounds = last.dataplane.networking.inbound
        first = msgspec.structs.replace(
            inbounds[0], health=None if ready is None else Health(ready=ready),
            state=state)
        dp = msgspec.structs.replace(last.dataplane, networking=msgspec.structs.replace(
            last.dataplane.networking, inbound=[first, *inbounds[1:]]))
        self._add(DataplaneRegistered(at=self._next_at(), dataplane=dp, origin=last.origin))
        return self

    def delete_mesh(self, name: str) -> History:
        self._add(MeshDeleted(at=self._next_at(), name=name))
        return self

    def deregister(self, mesh: str, name: str) -> History:
        self._add(DataplaneDeregistered(at=self._next_at(), mesh=mesh, name=name))
        return self

    def apply(self, ms: MeshService) -> History:
        self._add(MeshServiceApplied(at=self._next_at(), meshservice=ms))
        return self

    def delete(self, mesh: str, name: str) -> History:
        self._add(MeshServiceDeleted(at=self._next_at(), mesh=mesh, name=name))
        return self

    def apply_generator(self, name: str, template: str, match_labels: dict[str, str] | None = None,
                        *, labels: dict[str, str] | None = None) -> History:
        self._add(HostnameGeneratorApplied(at=self._next_at(), hostname_generator=generator(
            name, template, match_labels, labels=labels)))
        return self

    def delete_generator(self, name: str) -> History:
        self._add(HostnameGeneratorDeleted(at=self._next_at(), name=name))
        return self

    def permit(self, mtp: MeshTrafficPermission) -> History:
        self._add(MeshTrafficPermissionApplied(at=self._next_at(), policy=mtp))
        return self

    def delete_permission(self, mesh: str, name: str) -> History:
        self._add(MeshTrafficPermissionDeleted(at=self._next_at(), mesh=mesh, name=name))
        return self

    def apply_policy(self, policy: MeshScopedResource) -> History:
        """A policy of any kind applied (`events.policy_kinds`)."""
        kind = kind_of_policy(policy)
        assert kind is not None, f"{type(policy).__name__} is no policy kind"
        self._add(kind.applied_event(policy, self._next_at()))
        return self

    def delete_policy(self, kind: PolicyKind[Any], mesh: str, name: str) -> History:
        self._add(kind.deleted_event(mesh, name, self._next_at()))
        return self

    def apply_timeout(self, mt: MeshTimeout) -> History:
        self._add(MeshTimeoutApplied(at=self._next_at(), policy=mt))
        return self

    def delete_timeout(self, mesh: str, name: str) -> History:
        self._add(MeshTimeoutDeleted(at=self._next_at(), mesh=mesh, name=name))
        return self

    def apply_retry(self, mr: MeshRetry) -> History:
        self._add(MeshRetryApplied(at=self._next_at(), policy=mr))
        return self

    def delete_retry(self, mesh: str, name: str) -> History:
        self._add(MeshRetryDeleted(at=self._next_at(), mesh=mesh, name=name))
        return self

    def apply_mmzs(self, mmzs: MeshMultiZoneService) -> History:
        self._add(MeshMultiZoneServiceApplied(at=self._next_at(), meshmultizoneservice=mmzs))
        return self

    def delete_mmzs(self, mesh: str, name: str) -> History:
        self._add(MeshMultiZoneServiceDeleted(at=self._next_at(), mesh=mesh, name=name))
        return self

    def grace(self, ms: int) -> History:
        self._add(GracePeriodConfigured(at=self._next_at(), grace_period_ms=ms))
        return self

    def wait(self, ms: int) -> History:
        """Time passes without an event."""
        self._at += ms
        return self

    def tick(self) -> History:
        self._add(ClockTicked(at=self._next_at()))
        return self

    def tick_at(self, at: int) -> History:
        """A `ClockTicked` at `at` (not before the last event); the next event is `gap` after."""
        assert at >= self._at, "time goes forward"
        self._at = at
        self._add(ClockTicked(at=at))
        return self

    def mtls(self, mesh: str, *backends: str, enabled: str | None = None,
             mode: str = "STRICT", expiration: str = "10s") -> History:
        """The command side's CA events for `backends` not recorded yet, then a Mesh with
        mTLS on `enabled` (None: off); the CAs are made once per test run and shared."""
        for backend in backends:
            if (mesh, backend) not in self._cas:
                self._cas.add((mesh, backend))
                cert, key = _ca(mesh, backend)
                self._add(CaCreated(at=self._next_at(), mesh=mesh, backend=backend,
                                    type="builtin", cert=cert, key=key))
        doc: dict[str, Any] = {"type": "Mesh", "name": mesh, "mtls": {"backends": [
            {"name": b, "type": "builtin", "mode": mode,
             "dpCert": {"rotation": {"expiration": expiration}}} for b in backends]}}
        if enabled is not None:
            doc["mtls"]["enabledBackend"] = enabled
        resource = decode_resource(doc)
        assert isinstance(resource, Mesh)
        self._add(MeshApplied(at=self._next_at(), mesh=resource))
        return self

    def revoke(self, jti: str, *, mesh: str | None = "default",
               expires_in: int | None = None) -> History:
        """A revocation of a dataplane token of `mesh` (None: a user token) whose token
        expires `expires_in` ms after the event (None: expiry unknown, `expires_at` 0)."""
        at = self._next_at()
        self._add(TokenRevoked(
            at=at, purpose="dataplane-token" if mesh is not None else "user-token", jti=jti,
            mesh=mesh, expires_at=0 if expires_in is None else at + expires_in))
        return self

    def ipam(self, cidr: str, kind: ServiceKind = "MeshService") -> History:
        self._add(IpamConfigured(at=self._next_at(), kind=kind, cidr=cidr))
        return self


def realistic_history() -> list[AnyEvent]:
    """Three meshes, 21 Dataplanes over 5 services, churn, user MeshServices, CIDR changes,
    HostnameGenerators (a template error, collisions, an overridden default), a grace period
    that lets some generated MeshServices expire, MeshTrafficPermissions applied, changed and
    deleted, revocations (one dropped once its token has long expired), a clock tick and
    MeshTimeouts applied, changed and deleted."""
    h = History()
    for mesh in ("default", "payments", "edge"):
        h.mesh(mesh)
    h.grace(20_000)  # 20 events
    services = {"web": (8080, "http"), "api": (9090, "grpc"), "db": (5432, None),
                "cache": (6379, "tcp"), "auth": (7000, "http2")}
    names = sorted(services)
    for i in range(21):
        mesh = ("default", "payments", "edge")[i % 3]
        service = names[i % len(names)]
        port, protocol = services[service]
        extra = [inbound(9901, service, name="metrics")] if i % 4 == 0 else []
        h.register(dataplane(mesh, f"{service}-{i}", f"10.0.{i % 3}.{10 + i}",
                             inbound(port, service, name="main", protocol=protocol), *extra,
                             advertised=f"192.168.0.{i}" if i % 5 == 0 else None))
        if i == 6:
            h.apply(meshservice("default", "web", ms_port(80, target="main", protocol="http"),
                                labels={"team": "frontend"}))
            h.apply_generator("by-team", '{{ .Name }}.{{ label "team" }}.internal')
        if i == 12:
            h.apply_generator("flat", "svc-{{ .Mesh }}.flat", {"kuma.io/mesh": "payments"})
    # re-registrations: other ports, health down, NotReady, a second service on one proxy
    h.register(dataplane("default", "api-0", "10.0.0.10",
                         inbound(9191, "api", protocol="grpc"), inbound(9901, "api")))
    h.register(dataplane("payments", "cache-7", "10.0.1.17",
                         inbound(6379, "cache", name="main", ready=False)))
    h.register(dataplane("edge", "cache-2", "10.0.2.12",
                         inbound(6379, "cache", name="main", state="NotReady")))
    h.register(dataplane("default", "db-3", "10.0.0.13", inbound(5432, "db", name="main"),
                         inbound(7001, "auth", address="10.1.0.13"), advertised="192.168.9.9"))
    h.ipam("10.96.0.0/24")
    h.apply_generator("local-universal-mesh-service", "{{ .DisplayName }}.{{ .Zone }}.mesh")
    h.apply(meshservice("payments", "ledger", ms_port(443, target=6379),
                        selector={SERVICE_TAG: "cache"}))
    h.apply(meshservice("edge", "api", ms_port(9090, name="grpc", protocol="grpc")))
    h.register(dataplane("edge", "api-new", "10.0.2.40", inbound(9090, "api", name="main")))
    h.register(dataplane("edge", "search-1", "10.0.2.41", inbound(8000, "search")))
    h.register(dataplane("edge", "bad-1", "10.0.2.42", inbound(8000, "Bad_Service")))
    h.delete("default", "web")  # the user one goes: the generator takes over for web-9
    h.delete("edge", "api")
    h.deregister("default", "web-9")  # the generated web goes away ...
    for name in ("auth-1", "cache-12", "db-8", "web-14"):
        h.deregister(("default", "payments", "edge")[int(name.split("-")[1]) % 3], name)
    h.apply(meshservice("payments", "ledger", ms_port(443, target=6379), ms_port(444),
                        selector={SERVICE_TAG: "cache"}, labels={"kuma.io/display-name": "db"}))
    h.apply(meshservice("payments", "cache", ms_port(6379, name="redis")))
    h.deregister("edge", "search-1")
    h.ipam("10.97.0.0/28")
    h.register(dataplane("default", "web-9", "10.0.0.19",  # ... and comes back
                         inbound(8081, "web", name="alt")))
    h.register(dataplane("edge", "search-2", "10.0.2.43", inbound(8000, "search")))
    h.register(dataplane("payments", "billing-1", "10.0.1.50", inbound(8000, "billing")))
    h.delete("payments", "cache")
    h.delete_generator("local-universal-mesh-service")  # the default comes back
    h.register(dataplane("payments", "web-4", "10.0.1.14", inbound(8080, "web", name="main"),
                         inbound(8443, "web", name="tls", protocol="tls")))
    h.register(dataplane("payments", "cache-7", "10.0.1.17",  # healthy again, under ledger
                         inbound(6379, "cache", name="main")))
    h.ipam("241.0.0.0/8")  # back to the first CIDR: its cursor restarts among used addresses
    h.register(dataplane("default", "audit-1", "10.0.0.60", inbound(8000, "audit")))
    h.permit(permission("default", "allow-web", ({"kind": "MeshService", "name": "web"},
                                                 "Allow"), target={"kind": "MeshService",
                                                                   "name": "api"}))
    h.permit(permission("payments", "deny-all", ({"kind": "Mesh"}, "Deny")))
    h.permit(permission("default", "allow-web", ({"kind": "MeshSubset", "tags": {
        SERVICE_TAG: "web"}}, "AllowWithShadowDeny"), labels={"team": "a"}))
    h.delete_permission("payments", "deny-all")
    h.deregister("default", "audit-1")
    h.mtls("edge", "ca-1", enabled="ca-1", expiration="10s")  # certificates for edge
    h.wait(9_000).tick()  # past 4/5 of 10 s: re-issued in the next window
    h.mtls("edge", "ca-1", "ca-2", enabled="ca-1")  # trust both ...
    h.mtls("edge", "ca-1", "ca-2", enabled="ca-2")  # ... issue from the new one
    h.revoke(JTIS[0], expires_in=-HOUR + 10_000)  # its token expired an hour ago, nearly
    h.revoke(JTIS[1], mesh=None)  # expiry unknown: kept for ever
    h.revoke(JTIS[2], mesh="edge", expires_in=HOUR)
    h.wait(25_000).tick()  # audit's grace period is over on a quiet log, and JTIS[0]'s
    # revocation goes (due 10 s after it was revoked)
    h.apply_mmzs(multizone_service("default", "web", {"kuma.io/display-name": "web"}, 8080))
    h.apply_mmzs(multizone_service("payments", "any", {"kuma.io/mesh": "payments"}, 6379, 443))
    h.register(dataplane("default", "web-20", "10.0.0.70", inbound(8080, "web", name="main")))
    h.ipam("10.98.0.0/30", "MeshMultiZoneService")
    h.apply_mmzs(multizone_service("edge", "a", {"team": "a"}, labels={
        "kuma.io/display-name": "same"}))
    h.apply_mmzs(multizone_service("edge", "b", {"team": "a"}, labels={
        "kuma.io/display-name": "same"}))  # its hostname collides with a's
    h.deregister("payments", "cache-7")  # ledger (matched by `any`) loses its endpoint
    h.delete_mmzs("payments", "any")
    h.apply_timeout(timeout("default", "slow-web", ({"kind": "MeshService", "name": "web"},
                                                    {"http": {"requestTimeout": "30s"}})))
    h.apply_timeout(timeout("payments", "short", ({"kind": "Mesh"}, {"idleTimeout": "5m"}),
                            target={"kind": "MeshSubset", "tags": {SERVICE_TAG: "billing"}}))
    h.apply_timeout(timeout("default", "slow-web", ({"kind": "MeshService", "name": "web"},
                                                    {"http": {"requestTimeout": "1m"}}),
                            labels={"team": "a"}))
    h.delete_timeout("payments", "short")
    return h.events


# --- folding --------------------------------------------------------------------------------


def split(events: Sequence[AnyEvent], sizes: Iterable[int]) -> list[list[AnyEvent]]:
    """`events` cut into consecutive batches of `sizes` (the last batch takes the rest)."""
    out: list[list[AnyEvent]] = []
    i = 0
    for size in sizes:
        if i >= len(events):
            break
        out.append(list(events[i:i + size]))
        i += size
    if i < len(events):
        out.append(list(events[i:]))
    return out


def random_sizes(n: int, seed: int, max_size: int = 7) -> list[int]:
    rng = random.Random(seed)
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(rng.randint(1, max_size))
    return sizes


Hints = Literal["command", "every", "none"]
"""Which records carry a `Meshlog-Readiness-Of` hint: those the command path marks
(`CommandHandler.execute`'s rule), every Dataplane's (a writer saying so of anything), or
none (an older writer). The rows must not depend on it."""
HINTS: tuple[Hints, ...] = ("command", "every", "none")


def fold(
    batches: Iterable[Sequence[AnyEvent]], *, state: ProjectionState | None = None,
    first_seq: int = 1, hints: Hints = "command",
) -> ProjectionState:
    """Fold `batches` like `Projector.run`: fold each event (a readiness change a later one
    replaces as its time only, projections.readiness), then derive and commit per batch."""
    state = (ProjectionState.load([], secret_key=SECRET_KEY, local_zone=ZONE) if state is None
             else state)
    seq = first_seq
    said: dict[str, tuple[int, AnyEvent]] = {}
    """Each subject's last (sequence, event) so far: what the command path decides on."""
    for batch in batches:
        records = []
        for event in batch:
            records.append(as_record(seq, event, said, hints))
            seq += 1
        readiness = BatchReadiness(records)
        fold_records(state, records, readiness)
        readiness.settle(state)
        derive_stale(state)
        state.take_changes()
    return state


def fold_records(state: ProjectionState, records: Sequence[Record], readiness: BatchReadiness,
                 *, by_subject: bool = False, leave_out: int = 0) -> int:
    """Fold `records` as `Projector._fold_batch` does (a readiness change its writer says is
    one, and `readiness` takes, as its time only), each with `PROVENANCE` or, `by_subject`,
    the provenance its subject names (as the projector does: a log that also holds another
    zone's events); the record at `leave_out` is left unfolded (one the projector stops in
    front of). How many were folded as their time only."""
    as_time = 0
    for record in records:
        if record.seq == leave_out:
            continue
        if record.readiness_of and readiness.fold(state, record):
            as_time += 1
            continue
        event = decode_event(record.data, seq=record.seq, subject=record.subject)
        provenance = provenance_of(record.subject) if by_subject else PROVENANCE
        apply_event(state, record.seq, event, provenance)
        readiness.folded(record, event, provenance)
    return as_time


def as_record(seq: int, event: AnyEvent, said: dict[str, tuple[int, AnyEvent]],
              hints: Hints = "command") -> Record:
    """`event` as the log holds it at `seq`: a Dataplane's on its own subject, with the
    readiness hint `hints` says; other events under a stand-in subject (folded with
    `PROVENANCE`)."""
    match event:
        case DataplaneRegistered(dataplane=dp):
            subject = resource_subject("Dataplane", dp.mesh, dp.name, ZONE)
        case DataplaneDeregistered(mesh=mesh, name=name):
            subject = resource_subject("Dataplane", mesh, name, ZONE)
        case _:
            return Record(seq, "test", encode_event(event), {}, SCHEMA_VERSION)
    previous = said.get(subject)
    said[subject] = (seq, event)
    if hints == "every":
        readiness_of = max(seq - 1, 1)
    elif hints == "command" and previous is not None and readiness_change(previous[1], event):
        readiness_of = previous[0]
    else:
        readiness_of = 0
    return Record(seq, subject, encode_event(event), {}, SCHEMA_VERSION, readiness_of)


def fold_all(events: Sequence[AnyEvent], *, hints: Hints = "command") -> ProjectionState:
    return fold([events], hints=hints)


Logged = tuple[str, AnyEvent]
"""An event with the subject it is stored under (which says who wrote it)."""


def fold_logged(logged: Sequence[Logged], state: ProjectionState, *, first_seq: int = 1
                ) -> ProjectionState:
    """Fold `logged` as one batch, each event with the provenance of its subject (a log that
    holds other zones' and global's events)."""
    for seq, (subject, event) in enumerate(logged, start=first_seq):
        apply_event(state, seq, event, provenance_of(subject))
    derive_stale(state)
    state.take_changes()
    return state


def rows(state: ProjectionState) -> Rows:
    return list(state.persisted())


def restart(state: ProjectionState) -> ProjectionState:
    """A fresh state loaded from what the store holds, as after a projector restart."""
    return ProjectionState.load(rows(state), secret_key=SECRET_KEY, local_zone=state.local_zone)


# --- reading persisted rows ------------------------------------------------------------------


def persisted(state: ProjectionState, collection: str, key: str) -> Any:
    for c, k, body in state.persisted():
        if (c, k) == (collection, key):
            return decode_row(c, body)
    return None


def _persisted_as(state: ProjectionState, row_type: type[R], collection: str,
                  key: str) -> R | None:
    for c, k, body in state.persisted():
        if (c, k) == (collection, key):
            return decode_typed(row_type, body)
    return None


def meshservice_row(state: ProjectionState, mesh: str, name: str) -> MeshServiceRow | None:
    return _persisted_as(state, MeshServiceRow, "meshservice", f"{mesh}/{name}")


def endpoints_row(state: ProjectionState, mesh: str, name: str) -> EndpointsRow | None:
    return _persisted_as(state, EndpointsRow, "endpoints", f"{mesh}/{name}")


def vip(state: ProjectionState, mesh: str, name: str) -> str | None:
    row = meshservice_row(state, mesh, name)
    if row is None or not row.status.vips:
        return None
    return row.status.vips[0].ip


def vip_rows(state: ProjectionState) -> dict[str, str]:
    """Every VIP ever handed out: `mesh/kind/name` -> ip."""
    return {k: decode_typed(VipRow, body).ip for c, k, body in state.persisted() if c == "vip"}


# --- random histories (hypothesis) ---------------------------------------------------------

_MESHES = ("default", "other")
_DP_NAMES = ("a", "b", "c", "d")
_SERVICES = ("web", "api", "Not_A_Label")
_PORTS = (80, 8080, 9090)
_CIDRS = ("241.0.0.0/8", "10.96.0.0/29", "10.97.0.0/30", "10.96.0.0/30")
_EXTRA_TAGS: tuple[dict[str, str], ...] = (
    {}, {"kuma.io/protocol": "http2"}, {"kuma.io/protocol": "x"}, {"app": "shop"})
_SELECTORS = (*({SERVICE_TAG: s} for s in _SERVICES),
              {"app": "shop"}, {"app": "shop", SERVICE_TAG: "api"})
_GENERATORS = ("local-universal-mesh-service", "g1", "g2")
_TEMPLATES = ("{{ .DisplayName }}.svc.mesh.local", "same.{{ .Mesh }}.local",
              '{{ .Name }}.{{ label "team" }}.x', "{{ .Name }}.{{ .Zone }}.mesh")
_MATCH_LABELS: tuple[dict[str, str], ...] = (
    {}, {"kuma.io/origin": "zone"}, {"team": "a"}, {"kuma.io/mesh": "other"})
_PERMISSIONS = ("allow-web", "deny-all")
_MMZS_SELECTORS = ({"kuma.io/display-name": "web"}, {"team": "a"}, {"kuma.io/mesh": "default"})
_SOURCES = ({"kind": "Mesh"}, {"kind": "MeshService", "name": "web"},
            {"kind": "MeshSubset", "tags": {"app": "shop"}})


@st.composite
def _inbounds(draw: st.DrawFn) -> list[dict[str, Any]]:
    ports = draw(st.lists(st.sampled_from(_PORTS), min_size=1, max_size=2, unique=True))
    return [inbound(
        port, draw(st.sampled_from(_SERVICES)),
        name=draw(st.sampled_from((None, "http", "main"))),
        protocol=draw(st.sampled_from((None, "http", "grpc"))),
        tags=draw(st.sampled_from(_EXTRA_TAGS)),
        ready=draw(st.sampled_from((None, True, False))),
        state=draw(st.sampled_from((None, "Ready", "NotReady", "Ignored"))),
        address=draw(st.sampled_from((None, "10.1.0.1"))),
    ) for port in ports]


@st.composite
def _ms_ports(draw: st.DrawFn) -> list[dict[str, Any]]:
    numbers = draw(st.lists(st.sampled_from(_PORTS), min_size=1, max_size=2, unique=True))
    names = draw(st.lists(st.sampled_from(("p1", "p2")), min_size=len(numbers),
                          max_size=len(numbers), unique=True))
    return [ms_port(number, name=name if draw(st.booleans()) else None,
                    target=draw(st.sampled_from((None, 8080, 9090, "http", "main"))),
                    protocol=draw(st.sampled_from((None, "http", "tcp"))))
            for number, name in zip(numbers, names, strict=True)]


def _step(draw: st.DrawFn, h: History) -> None:
    mesh = draw(st.sampled_from(_MESHES))
    kind = draw(st.sampled_from(("register", "register", "register", "flip", "flip",
                                 "deregister", "apply",
                                 "delete", "ipam", "mesh", "delete-mesh", "generator",
                                 "delete-generator", "grace", "tick", "mtls", "wait",
                                 "permit", "delete-permission", "mmzs", "delete-mmzs",
                                 "revoke", "timeout", "delete-timeout")))
    match kind:
        case "register":
            h.register(dataplane(
                mesh, draw(st.sampled_from(_DP_NAMES)),
                draw(st.sampled_from(("10.0.0.1", "10.0.0.2"))), *draw(_inbounds()),
                advertised=draw(st.sampled_from((None, "192.168.0.1")))),
                origin=draw(st.sampled_from(("api", "proxy"))))
        case "flip":
            h.flip(draw(st.integers(0, 40)), draw(st.sampled_from((None, True, False))),
                   draw(st.sampled_from(("Ready", "NotReady", "Ignored"))))
        case "deregister":
            h.deregister(mesh, draw(st.sampled_from(_DP_NAMES)))
        case "apply":
            display = draw(st.sampled_from((None, "web", "api")))
            labels = {"kuma.io/display-name": display} if display else {}
            if draw(st.booleans()):
                labels["team"] = "a"
            h.apply(meshservice(
                mesh, draw(st.sampled_from(("web", "api", "db"))), *draw(_ms_ports()),
                selector=draw(st.sampled_from(_SELECTORS)), labels=labels or None))
        case "delete":
            h.delete(mesh, draw(st.sampled_from(("web", "api", "db"))))
        case "ipam":
            h.ipam(draw(st.sampled_from(_CIDRS)),
                   draw(st.sampled_from(("MeshService", "MeshService", "MeshExternalService",
                                         "MeshMultiZoneService"))))
        case "delete-mesh":
            h.delete_mesh(mesh)
        case "generator":
            h.apply_generator(draw(st.sampled_from(_GENERATORS)),
                              draw(st.sampled_from(_TEMPLATES)),
                              draw(st.sampled_from(_MATCH_LABELS)))
        case "delete-generator":
            h.delete_generator(draw(st.sampled_from(_GENERATORS)))
        case "grace":
            h.grace(draw(st.sampled_from((0, 1500, 3000))))
        case "tick":
            h.tick()
        case "mtls":
            backends = draw(st.sampled_from((("ca-1",), ("ca-2",), ("ca-1", "ca-2"))))
            h.mtls(mesh, *backends, enabled=draw(st.sampled_from((None, *backends))),
                   mode=draw(st.sampled_from(("STRICT", "PERMISSIVE"))),
                   expiration=draw(st.sampled_from(("10s", "30s"))))
        case "wait":
            h.wait(draw(st.sampled_from((5_000, 9_000, 30_000))))
        case "permit":
            h.permit(permission(
                mesh, draw(st.sampled_from(_PERMISSIONS)),
                (draw(st.sampled_from(_SOURCES)),
                 draw(st.sampled_from(("Allow", "Deny", "AllowWithShadowDeny")))),
                labels=draw(st.sampled_from((None, {"kuma.io/zone": "elsewhere"})))))
        case "delete-permission":
            h.delete_permission(mesh, draw(st.sampled_from(_PERMISSIONS)))
        case "mmzs":
            h.apply_mmzs(multizone_service(
                mesh, draw(st.sampled_from(("redis", "cache"))),
                draw(st.sampled_from(_MMZS_SELECTORS)), draw(st.sampled_from(_PORTS)),
                labels=draw(st.sampled_from((None, {"kuma.io/display-name": "same"})))))
        case "delete-mmzs":
            h.delete_mmzs(mesh, draw(st.sampled_from(("redis", "cache"))))
        case "timeout":
            h.apply_timeout(timeout(
                mesh, draw(st.sampled_from(_PERMISSIONS)),
                (draw(st.sampled_from(({"kind": "Mesh"}, {"kind": "MeshService", "name": "web"}))),
                 draw(st.sampled_from(({"connectionTimeout": "1s"},
                                       {"http": {"requestTimeout": "0s"}})))),
                labels=draw(st.sampled_from((None, {"kuma.io/zone": "elsewhere"})))))
        case "delete-timeout":
            h.delete_timeout(mesh, draw(st.sampled_from(_PERMISSIONS)))
        case "revoke":
            # around the drop time (`state.drop_at`): gone before it is put, at the next
            # event, after a wait or a tick, never (unknown expiry, or a long-lived token)
            h.revoke(draw(st.sampled_from(JTIS)), mesh=draw(st.sampled_from((*_MESHES, None))),
                     expires_in=draw(st.sampled_from((
                         None, -HOUR - 1, -HOUR, -HOUR + 1, -HOUR + 1000, -HOUR + 5000,
                         -HOUR + 30_000, HOUR))))
        case _:
            h.mesh(mesh)


@st.composite
def histories(draw: st.DrawFn, max_events: int = 30) -> list[AnyEvent]:
    """Random histories over a small vocabulary, with ties in event time now and then."""
    h = History()
    for _ in range(draw(st.integers(1, max_events))):
        h.gap = draw(st.sampled_from((0, 1, 1000)))
        _step(draw, h)
    if not h.events:  # only `wait` steps, which append nothing
        h.tick()
    return h.events


@st.composite
def flappy_histories(draw: st.DrawFn, max_events: int = 40) -> list[AnyEvent]:
    """`histories` with readiness changes between the steps, as health checks flap: the
    events a projector folds as their time only when a later one replaces them
    (projections.readiness), next to the events that change what they would mark."""
    h = History()
    for _ in range(draw(st.integers(1, max_events))):
        h.gap = draw(st.sampled_from((0, 1, 1000)))
        if draw(st.booleans()):
            h.flip(draw(st.integers(0, 40)), draw(st.sampled_from((True, False, None))),
                   "Ready")
        else:
            _step(draw, h)
    if not h.events:
        h.tick()
    return h.events
