"""The proxies' resources: a Dataplane (a sidecar's inbounds, outbounds and transparent
proxying) and a ZoneIngress (a zone's entry point for other zones), with their networking."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta

from events.resources._base import (
    AppProtocol,
    Labels,
    MeshScopedResource,
    PortNumber,
    Resource,
    ServiceKind,
    _Base,
)

__all__ = [
    "ZONE_INGRESS_NODE",
    "Admin",
    "BackendRef",
    "Dataplane",
    "DataplaneNetworking",
    "Health",
    "Inbound",
    "Outbound",
    "ReachableBackendRef",
    "ReachableBackends",
    "ServiceProbe",
    "TcpProbe",
    "TransparentProxying",
    "ZoneIngress",
    "ZoneIngressAvailableService",
    "ZoneIngressNetworking",
]


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

# --- ZoneIngress ----------------------------------------------------------------------------


ZONE_INGRESS_NODE = "_zoneingress"
"""The first token of a zone ingress proxy's node id (`_zoneingress.<name>`), where a
sidecar's has its mesh, and so the mesh part of its insight's key (`events.bus.insights`):
no mesh can have it (`_` is not valid in a mesh name)."""


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
