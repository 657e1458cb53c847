"""MeshHTTPRoute (Kuma 2.x, `pkg/plugins/policies/meshhttproute`): how the selected proxies
route the HTTP requests of their outbounds to MeshServices: by path, method, headers and
query parameters, to weighted MeshService backends, with header and URL rewrites.

A subset, done whole: `to[].targetRef` names a MeshService; filters are
`RequestHeaderModifier`, `ResponseHeaderModifier`, `URLRewrite`, `RequestRedirect` and
`RequestMirror`; backendRefs (and a mirror's) name MeshServices. Other backend kinds and
`hostnames` (MeshGateway's) are refused by the rules (`events._http_route_rules`), never
accepted and ignored. Semantics: `xds_gateway.resources.http_routes`."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from events.resources._base import Labels, MeshScopedResource, PortNumber, _Base
from events.resources._policies import TargetRef

__all__ = [
    "HTTP_METHODS",
    "HeaderKeyValue",
    "HeaderModifier",
    "HttpHeaderMatch",
    "HttpRouteBackendRef",
    "HttpRouteFilter",
    "HttpRouteMatch",
    "MeshHTTPRoute",
    "MeshHTTPRouteRule",
    "MeshHTTPRouteSpec",
    "MeshHTTPRouteTo",
    "PathMatch",
    "PathRewrite",
    "QueryParamsMatch",
    "RequestMirror",
    "RequestRedirect",
    "RuleConf",
    "URLRewrite",
]

HTTP_METHODS = ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT",
                "TRACE")
_NonEmpty = Annotated[str, Meta(min_length=1)]


class PathMatch(_Base, frozen=True):
    type: Literal["Exact", "PathPrefix", "RegularExpression"]
    value: _NonEmpty
    """Exact and PathPrefix: an absolute path; a prefix matches whole `/`-separated
    segments (`/v2` matches `/v2` and `/v2/x`, not `/v20`)."""


class HttpHeaderMatch(_Base, frozen=True):
    """Kuma's `common_api.HeaderMatch`."""

    name: _NonEmpty
    type: Literal["Exact", "Present", "Absent", "Prefix", "RegularExpression"] = "Exact"
    value: str | None = None
    """None with Present and Absent."""


class QueryParamsMatch(_Base, frozen=True):
    type: Literal["Exact", "RegularExpression"]
    name: _NonEmpty
    value: str


class HttpRouteMatch(_Base, frozen=True):
    """All of its parts must match (AND)."""

    path: PathMatch | None = None
    method: str | None = None
    """One of `HTTP_METHODS`."""
    query_params: list[QueryParamsMatch] | None = None
    headers: list[HttpHeaderMatch] | None = None


class HeaderKeyValue(_Base, frozen=True):
    name: _NonEmpty
    value: str


class HeaderModifier(_Base, frozen=True):
    set: list[HeaderKeyValue] | None = None
    """Replaces the header's values."""
    add: list[HeaderKeyValue] | None = None
    """Appends a value to the header's."""
    remove: list[str] | None = None


class PathRewrite(_Base, frozen=True):
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None


class URLRewrite(_Base, frozen=True):
    hostname: str | None = None
    """The Host (`:authority`) the backend sees."""
    path: PathRewrite | None = None
    host_to_backend_hostname: bool = False
    """MeshGateway's only: refused."""


class RequestRedirect(_Base, frozen=True):
    """Kuma's: the rule answers with a redirect (its `Location` built from the request's URL
    with these parts replaced) instead of sending the request to a backend."""

    scheme: Literal["http", "https"] | None = None
    hostname: str | None = None
    path: PathRewrite | None = None
    """Left out: the request's path."""
    port: PortNumber | None = None
    """Left out: the request's port, if it had one, unless `hostname` is given (then
    Envoy, as in Kuma, writes no port: `http://new.example/...`)."""
    status_code: int | None = None
    """301, 302, 303, 307 or 308; left out: 302 (Kuma's CRD default, Gateway API's)."""


class HttpRouteFilter(_Base, frozen=True):
    type: str
    """`RequestHeaderModifier`, `ResponseHeaderModifier`, `URLRewrite`, `RequestRedirect`
    or `RequestMirror`."""
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    url_rewrite: URLRewrite | None = None
    request_redirect: RequestRedirect | None = None
    request_mirror: RequestMirror | None = None


class HttpRouteBackendRef(_Base, frozen=True):
    """Kuma's `common_api.BackendRef`: where a rule's requests go."""

    kind: str
    """`MeshService` (other kinds are refused)."""
    name: str | None = None
    port: PortNumber | None = None
    """The MeshService's port; left out: the one of the outbound's port number, else its
    only port."""
    weight: Annotated[int, Meta(ge=0, le=2**32 - 1)] = 1
    """A share of `weight / sum(weights)`; 0: none."""
    labels: Labels | None = None
    tags: Labels | None = None


class RequestMirror(_Base, frozen=True):
    """Kuma's: a copy of each request (or of `percentage` of them) is sent to `backendRef`,
    whose answer is dropped; the client gets the rule's backend's."""

    backend_ref: HttpRouteBackendRef
    """A MeshService and port, resolved as a rule's backendRefs (its weight is unused)."""
    percentage: int | float | str | None = None
    """Kuma's `IntOrString`: a number of percent in 0..100 (`50`, `"12.5"`); left out: 100."""


class RuleConf(_Base, frozen=True):
    filters: list[HttpRouteFilter] | None = None
    backend_refs: list[HttpRouteBackendRef] | None = None
    """None: the original destination."""


class MeshHTTPRouteRule(_Base, frozen=True):
    matches: list[HttpRouteMatch]
    """Any one of them (OR); rules of several policies with equal `matches` merge."""
    default: RuleConf = RuleConf()


class MeshHTTPRouteTo(_Base, frozen=True):
    target_ref: TargetRef
    """The destination whose requests the rules route: a MeshService `name`."""
    rules: list[MeshHTTPRouteRule] = []
    hostnames: list[str] | None = None
    """MeshGateway's only: refused."""


class MeshHTTPRouteSpec(_Base, frozen=True, kw_only=True):
    target_ref: TargetRef = TargetRef(kind="Mesh")
    """The proxies whose outbounds it routes: Mesh (default), MeshSubset, MeshService or
    Dataplane."""
    to: list[MeshHTTPRouteTo] = []


class MeshHTTPRoute(MeshScopedResource, frozen=True, kw_only=True, tag="MeshHTTPRoute"):
    """HTTP routing of the selected proxies' outbounds to MeshService ports of protocol
    `http`, `http2` or `grpc`. Semantics (which policies apply, how their rules merge and
    are ordered, what each field sets in Envoy): `xds_gateway.resources.http_routes`."""

    spec: MeshHTTPRouteSpec
