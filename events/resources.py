"""Resource schemas in Kuma's universal format (`type`, `mesh`, `name`, `labels`, ...).

These Structs are what the API accepts and what events carry. They are lenient about unknown
fields so that an old reader can still decode an event written by newer code (STYLE.md, schema
evolution); strictness for user input lives in `events.decoding`, at the edge.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeGuard, get_args

from msgspec import Meta, Struct, field

__all__ = [
    "APP_PROTOCOLS",
    "DEFAULT_HOSTNAME_GENERATORS",
    "SYNCED_HOSTNAME_GENERATORS",
    "Admin",
    "AppProtocol",
    "BackendRef",
    "Dataplane",
    "DataplaneNetworking",
    "DpCert",
    "Health",
    "HostnameGenerator",
    "HostnameGeneratorSelector",
    "HostnameGeneratorSpec",
    "Inbound",
    "KumaDuration",
    "LabelSelector",
    "Mesh",
    "MeshMtls",
    "MeshMultiZoneService",
    "MeshMultiZoneServicePort",
    "MeshMultiZoneServiceSelector",
    "MeshMultiZoneServiceSpec",
    "MeshScopedResource",
    "MeshService",
    "MeshServicePort",
    "MeshServiceSelector",
    "MeshServiceSpec",
    "MeshServiceState",
    "MeshServicesConfig",
    "MeshTrafficPermission",
    "MeshTrafficPermissionConf",
    "MeshTrafficPermissionFrom",
    "MeshTrafficPermissionSpec",
    "MtlsBackend",
    "MtlsBackendConf",
    "Outbound",
    "ProvidedSecret",
    "ReachableBackendRef",
    "ReachableBackends",
    "Resource",
    "Rotation",
    "ServiceKind",
    "ServiceProbe",
    "TargetRef",
    "TargetRefKind",
    "TcpProbe",
    "TrafficAction",
    "TransparentProxying",
    "ZoneIngress",
    "ZoneIngressAvailableService",
    "ZoneIngressNetworking",
    "duration_ms",
    "is_app_protocol",
    "is_resource_name",
]

# `\Z`, not `$`: `$` also matches before a trailing newline, which would reach NATS subjects.
RFC1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z"

_RESOURCE_NAME = re.compile(RFC1123_SUBDOMAIN)


def is_resource_name(value: str) -> bool:
    """Whether `value` passes `ResourceName` (an RFC 1123 subdomain of at most 253
    characters), checked outside a Struct."""
    return len(value) <= 253 and bool(_RESOURCE_NAME.fullmatch(value))


PortNumber = Annotated[int, Meta(ge=1, le=65535)]
ResourceName = Annotated[str, Meta(min_length=1, max_length=253, pattern=RFC1123_SUBDOMAIN)]
Labels = dict[str, str]
AppProtocol = Literal["http", "http2", "grpc", "tcp", "tls", "kafka", "mysql"]
APP_PROTOCOLS: tuple[str, ...] = get_args(AppProtocol)
ServiceKind = Literal["MeshService", "MeshExternalService", "MeshMultiZoneService"]
"""The kinds of service a backendRef names and a VIP is allocated for."""


def is_app_protocol(value: str) -> TypeGuard[AppProtocol]:
    """Whether `value` is one of the `appProtocol`s meshlog knows (`APP_PROTOCOLS`)."""
    return value in APP_PROTOCOLS


class _Base(Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True, gc=False):
    """Not tracked by the cyclic garbage collector (`gc=False`, inherited): frozen values
    built from their parts cannot form a reference cycle, and a projector holds many."""


class Resource(_Base, frozen=True, tag_field="type"):
    """A named, labelled resource; `type` is the msgspec tag."""

    name: ResourceName
    labels: Labels = {}


class MeshScopedResource(Resource, frozen=True, kw_only=True):
    mesh: ResourceName


# --- Mesh -----------------------------------------------------------------------------------


class MeshServicesConfig(_Base, frozen=True):
    mode: Literal["Disabled", "Everywhere", "ReachableBackends", "Exclusive"] = "Exclusive"


KumaDuration = Annotated[str, Meta(pattern=r"^([0-9]{1,9}(\.[0-9]{1,9})?(ms|s|m|h|d))+\Z")]
"""A duration as Kuma writes them in a Mesh: `24h`, `1d`, `90s`, `1h30m`."""


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(value: str) -> int:
    """A `KumaDuration` in milliseconds (`1h30m` -> 5400000)."""
    return round(sum(float(n) * _UNIT_MS[unit] for n, unit in _DURATION_PART.findall(value)))


class Rotation(_Base, frozen=True):
    expiration: KumaDuration = "24h"
    """How long a workload certificate lives; it is replaced after 4/5 of it (Kuma)."""


class DpCert(_Base, frozen=True):
    rotation: Rotation | None = None
    request_timeout: KumaDuration | None = None
    """Accepted for Kuma compatibility: certificates are issued by the projector, not
    requested by the proxy, so there is no request to time out."""


class ProvidedSecret(_Base, frozen=True):
    """Where a `provided` backend's CA certificate or key comes from: inline PEM (the key is
    sealed into the log and removed from the Mesh before the Mesh is stored)."""

    inline_string: str | None = None


class MtlsBackendConf(_Base, frozen=True):
    cert: ProvidedSecret | None = None
    key: ProvidedSecret | None = None
    ca_cert: dict[str, Any] | None = None
    """builtin: Kuma's `caCert{RSAbits, expiration}`; accepted, and the CA is EC P-256 with
    ten years (reference/security.md: an RSA leaf costs 375x an EC one)."""


class MtlsBackend(_Base, frozen=True):
    name: ResourceName
    type: Literal["builtin", "provided"]
    mode: Literal["STRICT", "PERMISSIVE"] = "STRICT"
    dp_cert: DpCert | None = None
    conf: MtlsBackendConf | None = None
    root_chain: dict[str, Any] | None = None


class MeshMtls(_Base, frozen=True):
    enabled_backend: str | None = None
    """The backend whose CA issues the workload certificates; none: mTLS is off."""
    backends: list[MtlsBackend] = []
    """Every listed backend's CA is trusted, so a CA change is done without a dropped request:
    add the new backend, enable it, then remove the old one."""
    skip_validation: bool | None = None


class Mesh(Resource, frozen=True, kw_only=True, tag="Mesh"):
    mesh_services: MeshServicesConfig | None = None
    mtls: MeshMtls | None = None

    def enabled_backend(self) -> MtlsBackend | None:
        """The backend mTLS runs on, or None when mTLS is off."""
        if self.mtls is None or self.mtls.enabled_backend is None:
            return None
        return next((b for b in self.mtls.backends if b.name == self.mtls.enabled_backend),
                    None)


# --- Dataplane ------------------------------------------------------------------------------


class Health(_Base, frozen=True):
    ready: bool = True


Duration = Annotated[str, Meta(pattern=r"^[0-9]{1,9}(\.[0-9]{1,9})?s\Z")]
"""A protobuf JSON duration, as Kuma writes them: `1s`, `0.5s`."""
Threshold = Annotated[int, Meta(ge=1, le=1000)]


class TcpProbe(_Base, frozen=True):
    """Connect to the service: it is healthy when the TCP handshake succeeds."""


class ServiceProbe(_Base, frozen=True):
    """Kuma's `inbound[].serviceProbe`: the proxy checks its own service through Envoy's Health
    Discovery Service, and the control plane turns the results into `health.ready`. Defaults
    are Kuma's (`dpServer.hds.checkDefaults`)."""

    interval: Duration = "1s"
    timeout: Duration = "2s"
    unhealthy_threshold: Threshold = 1
    healthy_threshold: Threshold = 1
    tcp: TcpProbe | None = None


class Inbound(_Base, frozen=True):
    port: PortNumber
    service_port: PortNumber | None = None
    service_address: str | None = None
    address: str | None = None
    tags: Labels = {}
    name: str | None = None
    health: Health | None = None
    state: Literal["Ready", "NotReady", "Ignored"] = "Ready"
    protocol: AppProtocol | None = None
    service_probe: ServiceProbe | None = None


class BackendRef(_Base, frozen=True):
    kind: ServiceKind
    name: str | None = None
    labels: Labels | None = None
    port: PortNumber | None = None


class Outbound(_Base, frozen=True):
    port: PortNumber
    address: str | None = None
    backend_ref: BackendRef | None = None
    tags: Labels | None = None


ReachableBackendRef = BackendRef
"""Same shape as an outbound's backendRef (kind, name or labels, optional port)."""


class ReachableBackends(_Base, frozen=True):
    refs: list[ReachableBackendRef] = []


class TransparentProxying(_Base, frozen=True):
    redirect_port_inbound: PortNumber | None = None
    redirect_port_outbound: PortNumber | None = None
    reachable_backends: ReachableBackends | None = None


class Admin(_Base, frozen=True):
    port: PortNumber


class DataplaneNetworking(_Base, frozen=True):
    address: Annotated[str, Meta(min_length=1)]
    advertised_address: str | None = None
    inbound: list[Inbound] = []
    outbound: list[Outbound] = []
    transparent_proxying: TransparentProxying | None = None
    admin: Admin | None = None


class Dataplane(MeshScopedResource, frozen=True, kw_only=True, tag="Dataplane"):
    networking: DataplaneNetworking
    # status is the control plane's (conditions, e.g. a service name that cannot become a
    # MeshService): accepted on input so `get -o yaml | apply` works, and dropped.
    status: dict[str, Any] | None = None


# --- MeshService ----------------------------------------------------------------------------


class MeshServiceSelector(_Base, frozen=True):
    dataplane_tags: Labels = {}


class MeshServicePort(_Base, frozen=True):
    port: PortNumber
    target_port: PortNumber | Annotated[str, Meta(min_length=1)] | None = None
    name: str | None = None
    app_protocol: AppProtocol = "tcp"


MeshServiceState = Literal["Available", "Unavailable"]


class MeshServiceSpec(_Base, frozen=True):
    selector: MeshServiceSelector
    ports: list[MeshServicePort]
    state: MeshServiceState | None = None
    """Kuma's `spec.state`: whether the service has a healthy endpoint, kept in the spec so
    that it crosses zones (Kuma strips status when it syncs). What other zones go by for a
    remote MeshService (a MeshMultiZoneService leaves out one that is not Available); None:
    not said (a local MeshService's state is its `status.state`)."""


class MeshService(MeshScopedResource, frozen=True, kw_only=True, tag="MeshService"):
    spec: MeshServiceSpec
    # status is owned by the control plane: accepted on input (so `get -o yaml | apply` works)
    # and ignored.
    status: dict[str, Any] | None = None


# --- HostnameGenerator ----------------------------------------------------------------------


class LabelSelector(_Base, frozen=True):
    match_labels: Labels = {}
    """Every label must match; empty selects every resource of the kind."""


class HostnameGeneratorSelector(_Base, frozen=True):
    """Exactly one kind is selected (Kuma's rule)."""

    mesh_service: LabelSelector | None = None
    mesh_external_service: LabelSelector | None = None
    mesh_multi_zone_service: LabelSelector | None = None


class HostnameGeneratorSpec(_Base, frozen=True):
    selector: HostnameGeneratorSelector
    template: str
    """`events.hostname_template`: {{ .DisplayName }}.svc.mesh.local and the like."""


class HostnameGenerator(Resource, frozen=True, kw_only=True, tag="HostnameGenerator"):
    """Global scope (no mesh), as in Kuma: one generator names services of every mesh."""

    spec: HostnameGeneratorSpec


DEFAULT_HOSTNAME_GENERATORS: tuple[HostnameGenerator, ...] = (
    # Kuma's defaults for a universal zone (pkg/defaults/hostname_generator.go). The synced-*
    # ones of a global control plane select resources of origin `global`: none on one zone.
    HostnameGenerator(
        name="local-mesh-external-service", labels={"kuma.io/origin": "zone"},
        spec=HostnameGeneratorSpec(
            selector=HostnameGeneratorSelector(mesh_external_service=LabelSelector(
                match_labels={"kuma.io/origin": "zone"})),
            template="{{ .DisplayName }}.extsvc.mesh.local")),
    HostnameGenerator(
        name="local-universal-mesh-service", labels={"kuma.io/origin": "zone"},
        spec=HostnameGeneratorSpec(
            selector=HostnameGeneratorSelector(mesh_service=LabelSelector(
                match_labels={"kuma.io/origin": "zone"})),
            template="{{ .DisplayName }}.svc.mesh.local")),
    # Kuma's global creates it (origin global, selecting MeshMultiZoneServices of origin
    # global) and syncs it to the zones. It selects every MeshMultiZoneService here: they all
    # come from global, or from a standalone control plane (origin zone), which meshlog lets
    # single-zone users create them on.
    HostnameGenerator(
        name="synced-mesh-multi-zone-service", labels={"kuma.io/origin": "global"},
        spec=HostnameGeneratorSpec(
            selector=HostnameGeneratorSelector(mesh_multi_zone_service=LabelSelector()),
            template="{{ .DisplayName }}.mzsvc.mesh.local")),
)
"""Exist implicitly on every zone; applying a generator of the same name overrides one, and
deleting that override brings the default back."""

SYNCED_HOSTNAME_GENERATORS: tuple[HostnameGenerator, ...] = (
    # Kuma's defaults that a global control plane creates and syncs to its zones
    # (pkg/defaults/hostname_generator.go): they name MeshServices synced from other zones,
    # which a zone sees with `kuma.io/origin: global` (projections.remote).
    HostnameGenerator(
        name="synced-universal-mesh-service",
        spec=HostnameGeneratorSpec(
            selector=HostnameGeneratorSelector(mesh_service=LabelSelector(
                match_labels={"kuma.io/origin": "global", "kuma.io/env": "universal"})),
            template="{{ .DisplayName }}.svc.{{ .Zone }}.mesh.local")),
)
"""Made once by the global control plane (`meshlog up --mode global`); global's to change."""


# --- MeshTrafficPermission ------------------------------------------------------------------

TargetRefKind = Literal["Mesh", "MeshSubset", "MeshService", "MeshServiceSubset", "Dataplane"]
"""The kinds a policy's targetRef may name. `TargetRef.kind` is a plain string so that an
event naming a kind a later release adds still decodes here; which kinds a given targetRef
takes is a rule of `events.validation` (the top-level one and `from[]` differ, as in Kuma)."""
TrafficAction = Literal["Allow", "Deny", "AllowWithShadowDeny"]


class TargetRef(_Base, frozen=True):
    """Kuma's targetRef (`api/common/v1alpha1/targetref.go`): a group of proxies, or of
    clients in `from[]`.

    `Mesh`: every one; `MeshSubset`: those whose inbound tags carry all `tags`;
    `MeshService`: the service `name`; `MeshServiceSubset`: the service `name` with all
    `tags`; `Dataplane`: the Dataplane `name`, or every Dataplane with all `labels`."""

    kind: str
    """One of `TargetRefKind`."""
    name: str | None = None
    labels: Labels | None = None
    tags: Labels | None = None


class MeshTrafficPermissionConf(_Base, frozen=True):
    action: TrafficAction
    """`AllowWithShadowDeny`: allowed, and Envoy's shadow rules count it as denied (a
    deny rehearsed before it is enforced)."""


class MeshTrafficPermissionFrom(_Base, frozen=True):
    target_ref: TargetRef
    """The clients this entry is about: Mesh, MeshSubset, MeshService or
    MeshServiceSubset."""
    default: MeshTrafficPermissionConf


class MeshTrafficPermissionSpec(_Base, frozen=True, kw_only=True):
    target_ref: TargetRef = TargetRef(kind="Mesh")
    """The proxies whose inbounds the policy guards: Mesh (default), MeshSubset,
    MeshService or Dataplane."""
    from_: list[MeshTrafficPermissionFrom] = field(name="from")


class MeshTrafficPermission(MeshScopedResource, frozen=True, kw_only=True,
                            tag="MeshTrafficPermission"):
    """Who may connect to the selected proxies' inbounds, enforced by Envoy's RBAC filter on
    the client certificate's SANs (mTLS). With mTLS on and no policy that allows a client,
    it is denied (Kuma >= 2.6). Semantics: `xds_gateway.resources.rbac`."""

    spec: MeshTrafficPermissionSpec


# --- MeshMultiZoneService -------------------------------------------------------------------


class MeshMultiZoneServicePort(_Base, frozen=True):
    """A port of the matched MeshServices: matched by number (`port`), as Kuma does."""

    port: PortNumber
    name: str | None = None
    app_protocol: AppProtocol = "tcp"


class MeshMultiZoneServiceSelector(_Base, frozen=True):
    mesh_service: LabelSelector
    """Every MeshService of the mesh carrying all `matchLabels` (not empty), in any zone."""


class MeshMultiZoneServiceSpec(_Base, frozen=True):
    selector: MeshMultiZoneServiceSelector
    ports: list[MeshMultiZoneServicePort]


class MeshMultiZoneService(MeshScopedResource, frozen=True, kw_only=True,
                           tag="MeshMultiZoneService"):
    """One service over the MeshServices of several zones (Kuma's
    `pkg/core/resources/apis/meshmultizoneservice`): clients reach it at its own VIP and
    hostname (`redis.mzsvc.mesh.local`) and are served by the local zone's MeshServices
    first, by other zones' when the local ones have no healthy endpoint (Envoy priorities).
    Created on the global control plane (or a standalone one, which meshlog allows)."""

    spec: MeshMultiZoneServiceSpec


# --- ZoneIngress ----------------------------------------------------------------------------


class ZoneIngressAvailableService(_Base, frozen=True):
    """Kuma's legacy `availableServices[]` (by `kuma.io/service` tags): accepted so that a
    Kuma document applies; meshlog routes by the MeshServices of the ingress's zone, not by
    this list."""

    tags: Labels = {}
    instances: int | None = None
    mesh: str | None = None
    external_service: bool | None = None


class ZoneIngressNetworking(_Base, frozen=True):
    address: Annotated[str, Meta(min_length=1)]
    """Where the ingress Envoy listens (an IP: Envoy binds it)."""
    port: PortNumber
    advertised_address: str | None = None
    """What other zones dial (e.g. a load balancer in front of the ingress); an ingress
    without both `advertisedAddress` and `advertisedPort` is not used by other zones."""
    advertised_port: PortNumber | None = None
    admin: Admin | None = None


class ZoneIngress(Resource, frozen=True, kw_only=True, tag="ZoneIngress"):
    """A zone's entry point for traffic from other zones (Kuma's
    `api/mesh/v1alpha1/zone_ingress.proto`): an Envoy that routes mesh mTLS connections by
    their SNI to the zone's MeshServices, passing TLS through. Registered by the zone it
    belongs to; other zones reach that zone's services at its advertised address and port.
    Belongs to no mesh."""

    zone: str | None = None
    """The zone it belongs to: pinned by the control plane to the zone that wrote it (Kuma's
    global pins it too); one that says another zone is refused."""
    networking: ZoneIngressNetworking
    available_services: list[ZoneIngressAvailableService] = []
