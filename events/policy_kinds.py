"""The policy kinds: the one place that declares each of Kuma's policies meshlog models.

A `PolicyKind` says everything the layers need to handle a policy without knowing which one
it is: its Kuma type name, the words for it (the API's plural, the CLI's singular and short
name), its schema and semantic rules, its two events (permanent tags) and its read-model
collection. The command path, the fold, the API, the CLI and the gateways' view read
`POLICY_KINDS` and handle every kind through one path; what a policy does to Envoy is the
gateway's (`xds_gateway.resources`, one module per kind).

A new kind: its schema (`events.resources`), its rules, its two events (`events.event_types`,
subclasses of `PolicyApplied`/`PolicyDeleted` with new tags) and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from events._circuit_breaker_rules import mesh_circuit_breaker
from events._http_route_rules import mesh_http_route
from events._load_balancing_rules import mesh_load_balancing_strategy
from events._retry_rules import mesh_retry
from events.errors import Violation
from events.event_types import (
    AnyEvent,
    MeshCircuitBreakerApplied,
    MeshCircuitBreakerDeleted,
    MeshHTTPRouteApplied,
    MeshHTTPRouteDeleted,
    MeshLoadBalancingStrategyApplied,
    MeshLoadBalancingStrategyDeleted,
    MeshRetryApplied,
    MeshRetryDeleted,
    MeshTimeoutApplied,
    MeshTimeoutDeleted,
    MeshTrafficPermissionApplied,
    MeshTrafficPermissionDeleted,
    PolicyApplied,
    PolicyDeleted,
)
from events.resources import (
    MeshCircuitBreaker,
    MeshHTTPRoute,
    MeshLoadBalancingStrategy,
    MeshRetry,
    MeshScopedResource,
    MeshTimeout,
    MeshTrafficPermission,
)
from events.validation import mesh_timeout_rules, mesh_traffic_permission_rules

__all__ = [
    "MESH_CIRCUIT_BREAKER",
    "MESH_HTTP_ROUTE",
    "MESH_LOAD_BALANCING_STRATEGY",
    "MESH_RETRY",
    "MESH_TIMEOUT",
    "MESH_TRAFFIC_PERMISSION",
    "POLICY_KINDS",
    "PolicyKind",
    "kind_of_event",
    "kind_of_policy",
    "policy_kind",
]

P = TypeVar("P", bound=MeshScopedResource)


@dataclass(frozen=True, eq=False)
class PolicyKind(Generic[P]):
    """One policy kind, declared once."""

    type_name: str
    """Kuma's `type` (`MeshTimeout`)."""
    plural: str
    """The API's collection (`/meshes/{mesh}/meshtimeouts`) and the CLI's plural."""
    short: str
    """The CLI's short name (`mt`)."""
    schema: type[P]
    rules: Callable[[P, list[Violation]], None]
    """Kuma's semantic rules, after the shape is right (`events.validation.validate`)."""
    applied: type[PolicyApplied[Any]]
    deleted: type[PolicyDeleted]
    sections: tuple[str, ...] = ("to",)
    """The spec's lists of entries (`to`, `from`): what the CLI's table shows."""

    def applied_event(self, policy: P, at: int) -> AnyEvent:
        """The event of `policy` applied (created or changed)."""
        # every kind's events are members of AnyEvent (tests/events/test_policy_kinds.py)
        return cast("AnyEvent", self.applied(at=at, policy=policy))

    def deleted_event(self, mesh: str, name: str, at: int) -> AnyEvent:
        """The event of policy `name` of `mesh` deleted."""
        return cast("AnyEvent", self.deleted(at=at, mesh=mesh, name=name))

    @property
    def singular(self) -> str:
        """The CLI's singular (`meshtimeout`), the subject token of its events and the
        read-model collection of its rows."""
        return self.type_name.lower()

    @property
    def collection(self) -> str:
        """The read-model collection (`projections.COLLECTIONS`) of its rows, keyed
        `<mesh>/<name>`."""
        return self.singular


MESH_TRAFFIC_PERMISSION: PolicyKind[MeshTrafficPermission] = PolicyKind(
    type_name="MeshTrafficPermission", plural="meshtrafficpermissions", short="mtp",
    schema=MeshTrafficPermission, rules=mesh_traffic_permission_rules,
    applied=MeshTrafficPermissionApplied, deleted=MeshTrafficPermissionDeleted,
    sections=("from",))
MESH_TIMEOUT: PolicyKind[MeshTimeout] = PolicyKind(
    type_name="MeshTimeout", plural="meshtimeouts", short="mt", schema=MeshTimeout,
    rules=mesh_timeout_rules, applied=MeshTimeoutApplied, deleted=MeshTimeoutDeleted)
MESH_RETRY: PolicyKind[MeshRetry] = PolicyKind(
    type_name="MeshRetry", plural="meshretries", short="mr", schema=MeshRetry,
    rules=mesh_retry, applied=MeshRetryApplied, deleted=MeshRetryDeleted)
MESH_CIRCUIT_BREAKER: PolicyKind[MeshCircuitBreaker] = PolicyKind(
    type_name="MeshCircuitBreaker", plural="meshcircuitbreakers", short="mcb",
    schema=MeshCircuitBreaker, rules=mesh_circuit_breaker, applied=MeshCircuitBreakerApplied,
    deleted=MeshCircuitBreakerDeleted)
MESH_HTTP_ROUTE: PolicyKind[MeshHTTPRoute] = PolicyKind(
    type_name="MeshHTTPRoute", plural="meshhttproutes", short="mhr", schema=MeshHTTPRoute,
    rules=mesh_http_route, applied=MeshHTTPRouteApplied, deleted=MeshHTTPRouteDeleted)
MESH_LOAD_BALANCING_STRATEGY: PolicyKind[MeshLoadBalancingStrategy] = PolicyKind(
    type_name="MeshLoadBalancingStrategy", plural="meshloadbalancingstrategies", short="mlbs",
    schema=MeshLoadBalancingStrategy, rules=mesh_load_balancing_strategy,
    applied=MeshLoadBalancingStrategyApplied, deleted=MeshLoadBalancingStrategyDeleted)

POLICY_KINDS: tuple[PolicyKind[Any], ...] = (MESH_TRAFFIC_PERMISSION, MESH_TIMEOUT, MESH_RETRY,
                                             MESH_CIRCUIT_BREAKER, MESH_HTTP_ROUTE,
                                             MESH_LOAD_BALANCING_STRATEGY)
"""Every policy kind, in the order lists of kinds show them."""

_BY_NAME = {k.type_name: k for k in POLICY_KINDS}
_BY_SCHEMA: dict[type, PolicyKind[Any]] = {k.schema: k for k in POLICY_KINDS}
_BY_EVENT: dict[type, PolicyKind[Any]] = {
    **{k.applied: k for k in POLICY_KINDS}, **{k.deleted: k for k in POLICY_KINDS}}


def policy_kind(type_name: str) -> PolicyKind[Any] | None:
    """The kind of Kuma type `type_name`; None for a type that is no policy."""
    return _BY_NAME.get(type_name)


def kind_of_policy(resource: object) -> PolicyKind[Any] | None:
    """The kind of a resource; None for one that is no policy."""
    return _BY_SCHEMA.get(type(resource))


def kind_of_event(event: PolicyApplied[Any] | PolicyDeleted) -> PolicyKind[Any]:
    """The kind an event of a policy is about."""
    return _BY_EVENT[type(event)]
