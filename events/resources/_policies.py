"""Policies: MeshTrafficPermission and the targetRef that says whom a policy is about."""

from __future__ import annotations

from typing import Literal

from msgspec import field

from events.resources._base import Labels, MeshScopedResource, _Base

__all__ = [
    "MeshTrafficPermission",
    "MeshTrafficPermissionConf",
    "MeshTrafficPermissionFrom",
    "MeshTrafficPermissionSpec",
    "TargetRef",
    "TargetRefKind",
    "TrafficAction",
]


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
