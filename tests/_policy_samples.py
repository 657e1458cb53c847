"""One sample of each policy kind (`events.POLICY_KINDS`), for the tests that check what every
kind does alike (the fold, the gateway's view, the API and the CLI): a valid spec, a changed
one, an invalid one with the violation it gets, and what its row of `meshlog get` shows.
A kind without a sample here fails those tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar, cast

from events import PolicyKind, decode_resource, kind_of_policy
from events.resources import MeshScopedResource

__all__ = ["SAMPLES", "Sample", "document", "resource", "sample"]

P = TypeVar("P", bound=MeshScopedResource)
_WEB = {"kind": "MeshSubset", "tags": {"kuma.io/service": "web"}}
_BACKEND = {"kind": "MeshService", "name": "backend"}


@dataclass(frozen=True)
class Sample:
    spec: dict[str, Any]
    changed: dict[str, Any]
    invalid: dict[str, Any]
    violation: tuple[str, str]
    """The first violation of `invalid`: field path, and how its reason starts."""
    cells: tuple[str, ...]
    """What the kind's row of `meshlog get <plural>` shows, each as it stands in the row."""


SAMPLES: dict[str, Sample] = {
    "MeshTrafficPermission": Sample(
        spec={"targetRef": {"kind": "Dataplane", "labels": {"app": "backend"}},
              "from": [{"targetRef": _WEB, "default": {"action": "Allow"}},
                       {"targetRef": {"kind": "Mesh"}, "default": {"action": "Deny"}}]},
        changed={"from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Deny"}}]},
        invalid={"from": []},
        violation=("spec.from", "must have at least one entry"),
        cells=("Dataplane{app=backend}", "MeshSubset{kuma.io/service=web}: Allow, Mesh: Deny")),
    "MeshTimeout": Sample(
        spec={"targetRef": _WEB, "to": [{"targetRef": _BACKEND, "default": {
            "connectionTimeout": "2s", "http": {"requestTimeout": "5s"}}}]},
        changed={"to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "1m"}}]},
        invalid={"to": [{"targetRef": _BACKEND, "default": {"connectionTimeout": "0s"}}]},
        violation=("spec.to[0].default.connectionTimeout", "'0s' must be greater than 0s"),
        cells=("MeshSubset{kuma.io/service=web}",
               "MeshService/backend: connectionTimeout=2s http.requestTimeout=5s")),
    "MeshRetry": Sample(
        spec={"targetRef": _WEB, "to": [{"targetRef": _BACKEND, "default": {
            "tcp": {"maxConnectAttempt": 3},
            "http": {"numRetries": 2, "retryOn": ["5xx", "503"]}}}]},
        changed={"to": [{"targetRef": {"kind": "Mesh"},
                         "default": {"tcp": {"maxConnectAttempt": 3}}}]},
        invalid={"to": [{"targetRef": _BACKEND, "default": {"http": {"retryOn": ["teapot"]}}}]},
        violation=("spec.to[0].default.http.retryOn[0]", "'teapot' is not one of 5xx, "
                   "gateway-error"),
        cells=("MeshService/backend: tcp.maxConnectAttempt=3 http.numRetries=2 "
               "http.retryOn=5xx,503",)),
    "MeshCircuitBreaker": Sample(
        spec={"targetRef": _WEB, "to": [{"targetRef": _BACKEND, "default": {
            "connectionLimits": {"maxConnections": 2, "maxPendingRequests": 1},
            "outlierDetection": {"detectors": {"totalFailures": {"consecutive": 5}}}}}]},
        changed={"to": [{"targetRef": {"kind": "Mesh"},
                         "default": {"connectionLimits": {"maxRequests": 10}}}]},
        invalid={"to": [{"targetRef": _BACKEND,
                         "default": {"connectionLimits": {"maxConnections": 0}}}]},
        violation=("spec.to[0].default.connectionLimits.maxConnections",
                   "0 must be between 1 and"),
        # the rest of the cell wraps onto the table's next line
        cells=("MeshService/backend: connectionLimits.maxConnections=2 "
               "connectionLimits.maxPendingRequests=1",)),
    "MeshHTTPRoute": Sample(
        spec={"targetRef": _WEB, "to": [{"targetRef": _BACKEND, "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
            "default": {"filters": [{"type": "RequestHeaderModifier",
                                     "requestHeaderModifier": {"set": [
                                         {"name": "x-version", "value": "v2"}]}}]}}]}]},
        changed={"to": [{"targetRef": _BACKEND, "rules": [{
            "matches": [{"method": "GET"}],
            "default": {"filters": [{"type": "ResponseHeaderModifier",
                                     "responseHeaderModifier": {"remove": ["server"]}}]}}]}]},
        invalid={"to": [{"targetRef": _BACKEND, "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
            "default": {"filters": [{"type": "RequestMirror"}]}}]}]},
        violation=("spec.to[0].rules[0].default.filters[0].requestMirror",
                   "must be defined"),
        cells=("MeshService/backend: 1 rule",)),
    "MeshLoadBalancingStrategy": Sample(
        spec={"targetRef": _WEB, "to": [{"targetRef": _BACKEND, "default": {
            "loadBalancer": {"type": "LeastRequest", "leastRequest": {"choiceCount": 3}}}}]},
        changed={"to": [{"targetRef": {"kind": "Mesh"},
                         "default": {"loadBalancer": {"type": "Random"}}}]},
        invalid={"to": [{"targetRef": _BACKEND,
                         "default": {"loadBalancer": {"type": "Fastest"}}}]},
        violation=("spec.to[0].default.loadBalancer.type", "'Fastest' is not one of"),
        cells=("MeshService/backend: loadBalancer.type=LeastRequest",)),
}


def sample(kind: PolicyKind[Any]) -> Sample:
    return SAMPLES[kind.type_name]


def document(kind: PolicyKind[Any], name: str, mesh: str = "default",
             spec: dict[str, Any] | None = None, labels: dict[str, str] | None = None
             ) -> dict[str, Any]:
    """A document of `kind` (the sample's spec unless `spec`), as a user applies it."""
    doc: dict[str, Any] = {"type": kind.type_name, "mesh": mesh, "name": name,
                           "spec": sample(kind).spec if spec is None else spec}
    if labels:
        doc["labels"] = labels
    return doc


def resource(kind: PolicyKind[P], name: str, mesh: str = "default",
             spec: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> P:
    """`document` decoded and validated, as the command path stores it."""
    decoded = decode_resource(document(kind, name, mesh, spec, labels))
    assert isinstance(decoded, MeshScopedResource) and kind_of_policy(decoded) is kind
    return cast(P, decoded)  # its kind's schema, checked above
