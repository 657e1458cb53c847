"""Services and their names: MeshService, MeshMultiZoneService (one service over the
MeshServices of several zones) and HostnameGenerator (the hostnames of both), with Kuma's
default generators."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta

from events.resources._base import (
    AppProtocol,
    Labels,
    MeshScopedResource,
    PortNumber,
    Resource,
    _Base,
)

__all__ = [
    "DEFAULT_HOSTNAME_GENERATORS",
    "SYNCED_HOSTNAME_GENERATORS",
    "HostnameGenerator",
    "HostnameGeneratorSelector",
    "HostnameGeneratorSpec",
    "LabelSelector",
    "MeshMultiZoneService",
    "MeshMultiZoneServicePort",
    "MeshMultiZoneServiceSelector",
    "MeshMultiZoneServiceSpec",
    "MeshService",
    "MeshServicePort",
    "MeshServiceSelector",
    "MeshServiceSpec",
    "MeshServiceState",
]


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
