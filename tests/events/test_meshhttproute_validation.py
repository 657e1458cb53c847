"""MeshHTTPRoute documents: Kuma's universal format and rules
(`meshhttproute/api/v1alpha1/validation.go` and its tests' cases), every violation with its
path and value; what meshlog does not implement is refused, saying so. What every policy
kind does alike (events, round trips): tests/events/test_policy_kinds.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from events import InvalidResource, MeshHTTPRoute, decode_resource
from tests.harness import envoy_binary

_BACKEND = {"kind": "MeshService", "name": "backend"}
_V2 = {"path": {"type": "PathPrefix", "value": "/v2"}}


def _route(*rules: dict[str, Any], to: dict[str, Any] = _BACKEND,
           target: dict[str, Any] | None = None, **entry: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"to": [{"targetRef": to, "rules": list(rules), **entry}]}
    if target is not None:
        spec["targetRef"] = target
    return {"type": "MeshHTTPRoute", "mesh": "default", "name": "route", "spec": spec}


def _rule(*matches: dict[str, Any], **default: Any) -> dict[str, Any]:
    return {"matches": list(matches), "default": default}


def _violations(raw: Any) -> list[str]:
    with pytest.raises(InvalidResource) as info:
        decode_resource(raw)
    return [str(v) for v in info.value.violations]


KUMAS_EXAMPLE = _route(
    _rule({"path": {"type": "Exact", "value": "/"}, "method": "GET",
           "queryParams": [{"type": "Exact", "name": "foo", "value": "bar"},
                           {"type": "RegularExpression", "name": "baz", "value": "b.*"}],
           "headers": [{"name": "x-a", "value": "1"}, {"name": "x-b", "type": "Present"},
                       {"name": "x-c", "type": "Absent"},
                       {"name": "x-d", "type": "Prefix", "value": "p"},
                       {"name": "x-e", "type": "RegularExpression", "value": "e+"}]},
          filters=[
              {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                  "set": [{"name": "x-set", "value": "s"}],
                  "add": [{"name": "x-add", "value": "a"}], "remove": ["x-remove"]}},
              {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                  "set": [{"name": "x-set", "value": "s"}]}},
              {"type": "URLRewrite", "urlRewrite": {
                  "hostname": "example.com",
                  "path": {"type": "ReplaceFullPath", "replaceFullPath": "/new"}}}],
          backendRefs=[{"kind": "MeshService", "name": "backend", "port": 8080, "weight": 90},
                       {"kind": "MeshService", "name": "backend-v2", "weight": 10}]),
    _rule(_V2, filters=[{"type": "URLRewrite", "urlRewrite": {
        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]),
    target={"kind": "MeshSubset", "tags": {"kuma.io/service": "web"}})


def test_kumas_example_is_valid_and_keeps_every_field() -> None:
    route = decode_resource(KUMAS_EXAMPLE)

    assert isinstance(route, MeshHTTPRoute)
    rule = route.spec.to[0].rules[0]
    assert rule.matches[0].method == "GET"
    assert [h.type for h in rule.matches[0].headers or []] == [
        "Exact", "Present", "Absent", "Prefix", "RegularExpression"]
    assert [r.weight for r in rule.default.backend_refs or []] == [90, 10]
    assert [f.type for f in rule.default.filters or []] == [
        "RequestHeaderModifier", "ResponseHeaderModifier", "URLRewrite"]


def test_redirect_and_mirror_filters_are_valid_and_keep_every_field() -> None:
    raw = _route(
        _rule(_V2, filters=[{"type": "RequestRedirect", "requestRedirect": {
            "scheme": "https", "hostname": "example.com", "port": 8443, "statusCode": 308,
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v3"}}},
            {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                "set": [{"name": "x-moved", "value": "yes"}]}}]),
        _rule({"method": "POST"}, filters=[
            {"type": "RequestMirror", "requestMirror": {
                "backendRef": {"kind": "MeshService", "name": "shadow", "port": 8080},
                "percentage": "12.5"}},
            {"type": "RequestMirror", "requestMirror": {
                "backendRef": {"kind": "MeshService", "name": "audit"}, "percentage": 100}}],
            backendRefs=[{"kind": "MeshService", "name": "backend-v2"}]))

    route = decode_resource(raw)

    assert isinstance(route, MeshHTTPRoute)
    redirect, mirror = route.spec.to[0].rules
    r = (redirect.default.filters or [])[0].request_redirect
    assert r is not None and (r.scheme, r.hostname, r.port, r.status_code) == (
        "https", "example.com", 8443, 308)
    assert r.path is not None and r.path.replace_prefix_match == "/v3"
    mirrors = [f.request_mirror for f in mirror.default.filters or []]
    assert [(m.backend_ref.name, m.backend_ref.port, m.percentage)
            for m in mirrors if m is not None] == [("shadow", 8080, "12.5"), ("audit", None, 100)]


@pytest.mark.parametrize(("raw", "expected"), [
    pytest.param(_route(_rule({"path": {"type": "PathPrefix", "value": "/v2/"}})),
                 ["spec.to[0].rules[0].matches[0].path.value: '/v2/' does not need a trailing "
                  "slash because only a `/`-separated prefix or an entire path is matched"],
                 id="prefix with a trailing slash"),
    pytest.param(_route(_rule({"path": {"type": "Exact", "value": "v2"}})),
                 ["spec.to[0].rules[0].matches[0].path.value: 'v2' must be an absolute path "
                  "(start with /)"], id="relative exact path"),
    pytest.param(_route(_rule({"path": {"type": "PathPrefix", "value": "/a?b=1"}})),
                 ["spec.to[0].rules[0].matches[0].path.value: '/a?b=1' must not contain '?' "
                  "or '#': a path is matched without its query and fragment"],
                 id="path with a query"),
    pytest.param(_route(_rule({"path": {"type": "RegularExpression", "value": "/(x"}})),
                 ["spec.to[0].rules[0].matches[0].path.value: '/(x' is not a regular "
                  "expression Envoy reads (RE2): missing ): /(x"],
                 id="regular expression that does not compile"),
    pytest.param(_route(_rule({"path": {"type": "RegularExpression", "value": "/a(?=b)"}})),
                 ["spec.to[0].rules[0].matches[0].path.value: '/a(?=b)' is not a regular "
                  "expression Envoy reads (RE2): invalid perl operator: (?="],
                 id="lookahead, which Python reads and RE2 does not"),
    pytest.param(_route(_rule({"path": {"type": "RegularExpression", "value": "/[é-a]"}})),
                 ["spec.to[0].rules[0].matches[0].path.value: '/[é-a]' is not a regular "
                  "expression Envoy reads (RE2): invalid character class range: \ufffd-a"],
                 id="RE2's quote of a non-ASCII pattern is not mojibake"),
    pytest.param(_route(_rule({"headers": [{"name": "x", "type": "RegularExpression",
                                            "value": "a{30}b{30}c{30}d{30}"}]})),
                 ["spec.to[0].rules[0].matches[0].headers[0].value: 'a{30}b{30}c{30}d{30}' "
                  "is too complex for Envoy: its RE2 program size is 124, Envoy's limit 100"],
                 id="regular expression over Envoy's program size"),
    pytest.param(_route(_rule({"method": "FETCH"})),
                 ["spec.to[0].rules[0].matches[0].method: 'FETCH' is not one of CONNECT, "
                  "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE"], id="unknown method"),
    pytest.param(_route(_rule({"headers": [{"name": "x", "type": "Present", "value": "v"}]})),
                 ["spec.to[0].rules[0].matches[0].headers[0].value: 'v' must not be defined "
                  "with type Present"], id="present header with a value"),
    pytest.param(_route(_rule({"queryParams": [
        {"type": "Exact", "name": "q", "value": "1"},
        {"type": "Exact", "name": "q", "value": "2"}]})),
                 ["spec.to[0].rules[0].matches[0].queryParams[1].name: multiple entries for "
                  "name 'q'"], id="query parameter matched twice"),
    pytest.param(_route({"matches": [], "default": {}}),
                 ["spec.to[0].rules[0].matches: [] must list at least one match"],
                 id="rule without matches"),
    pytest.param(_route(_rule(_V2, filters=[{"type": "RequestHeaderModifier",
                                             "requestHeaderModifier": {}}])),
                 ["spec.to[0].rules[0].default.filters[0].requestHeaderModifier: must have at "
                  "least one defined: set, add, remove"], id="empty header modifier"),
    pytest.param(_route(_rule(_V2, filters=[{"type": "ResponseHeaderModifier",
                                             "responseHeaderModifier": {
                                                 "set": [{"name": "x-a", "value": "1"}],
                                                 "remove": ["x-a"]}}])),
                 ["spec.to[0].rules[0].default.filters[0].responseHeaderModifier.remove[0]"
                  ".name: 'x-a': duplicate header name"], id="header modified twice"),
    pytest.param(_route(_rule(_V2, filters=[{"type": "RequestHeaderModifier",
                                             "requestHeaderModifier": {"set": [
                                                 {"name": "Host", "value": "x"}]}}])),
                 ["spec.to[0].rules[0].default.filters[0].requestHeaderModifier.set[0].name: "
                  "'Host' cannot be modified here (Envoy refuses it; a URLRewrite sets the "
                  "host)"], id="host header modified"),
    pytest.param(_route(_rule(_V2, filters=[{"type": "RequestHeaderModifier"}])),
                 ["spec.to[0].rules[0].default.filters[0].requestHeaderModifier: must be "
                  "defined"], id="filter without its configuration"),
    pytest.param(_route(_rule({"path": {"type": "Exact", "value": "/a"}}, filters=[
        {"type": "URLRewrite", "urlRewrite": {"path": {
            "type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"}}}])),
                 ["spec.to[0].rules[0].default.filters[0].urlRewrite.path.replacePrefixMatch: "
                  "can only appear if all matches match a path prefix"],
                 id="prefix rewrite without a prefix match"),
    pytest.param(_route(_rule(_V2, filters=[{"type": "URLRewrite", "urlRewrite": {
        "path": {"type": "ReplaceFullPath"}}}])),
                 ["spec.to[0].rules[0].default.filters[0].urlRewrite.path.replaceFullPath: "
                  "must be defined with type ReplaceFullPath"], id="full path rewrite empty"),
    pytest.param(_route(_rule(_V2, filters=[{"type": "URLRewrite", "urlRewrite": {
        "hostname": "10.0.0.1"}}])),
                 ["spec.to[0].rules[0].default.filters[0].urlRewrite.hostname: '10.0.0.1' "
                  "cannot be an IP address"], id="hostname that is an IP"),
    pytest.param(_route(_rule(_V2, filters=[{"type": "URLRewrite", "urlRewrite": {
        "hostToBackendHostname": True}}])),
                 ["spec.to[0].rules[0].default.filters[0].urlRewrite.hostToBackendHostname: "
                  "can only be set with MeshGateway, which meshlog does not model"],
                 id="hostToBackendHostname"),
    pytest.param(_route(_rule(_V2, filters=[{"type": "RequestRedirect"}])),
                 ["spec.to[0].rules[0].default.filters[0].requestRedirect: must be defined"],
                 id="RequestRedirect without its field"),
    pytest.param(_route(_rule(_V2, filters=[{"type": "RequestRedirect", "requestRedirect": {
        "statusCode": 304, "hostname": "10.0.0.1", "path": {
            "type": "ReplaceFullPath", "replaceFullPath": "x"}}}])),
                 ["spec.to[0].rules[0].default.filters[0].requestRedirect.hostname: "
                  "'10.0.0.1' cannot be an IP address",
                  "spec.to[0].rules[0].default.filters[0].requestRedirect.path.replaceFullPath: "
                  "'x' must be an absolute path (start with /): Envoy would send it as the "
                  "request's path as it is",
                  "spec.to[0].rules[0].default.filters[0].requestRedirect.statusCode: 304 is "
                  "not one of 301, 302, 303, 307, 308"], id="RequestRedirect's parts"),
    pytest.param(_route(_rule({"method": "GET"}, filters=[{
        "type": "RequestRedirect", "requestRedirect": {"path": {
            "type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"}}}])),
                 ["spec.to[0].rules[0].default.filters[0].requestRedirect.path."
                  "replacePrefixMatch: can only appear if all matches match a path prefix"],
                 id="redirect's prefix replacement without a prefix match"),
    pytest.param(_route(_rule(_V2, filters=[{"type": "RequestRedirect", "requestRedirect": {
        "scheme": "ftp"}}])),
                 ["spec.to[0].rules[0].default.filters[0].requestRedirect.scheme: 'ftp' is "
                  "not one of http, https"],
                 id="redirect's scheme"),
    pytest.param(_route(_rule(_V2, filters=[
        {"type": "RequestRedirect", "requestRedirect": {"port": 8443}},
        {"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}},
        {"type": "URLRewrite", "urlRewrite": {"hostname": "a.b"}},
        {"type": "RequestMirror", "requestMirror": {"backendRef": _BACKEND}}],
        backendRefs=[_BACKEND])),
                 ["spec.to[0].rules[0].default.filters[1].type: 'RequestRedirect' may appear "
                  "once in a rule's filters",
                  "spec.to[0].rules[0].default.filters: RequestRedirect and URLRewrite cannot "
                  "be combined in one rule: a redirect is not forwarded, so nothing is "
                  "rewritten (Gateway API allows one of the two)",
                  "spec.to[0].rules[0].default.filters: RequestRedirect and RequestMirror "
                  "cannot be combined in one rule: a redirect is not forwarded, so nothing is "
                  "mirrored",
                  "spec.to[0].rules[0].default.backendRefs: must not be defined with a "
                  "RequestRedirect filter: Envoy answers the redirect itself, the backends "
                  "would never be used"], id="a redirect with what needs forwarding"),
    pytest.param(_route(_rule(_V2, filters=[{"type": "RequestMirror"}])),
                 ["spec.to[0].rules[0].default.filters[0].requestMirror: must be defined"],
                 id="RequestMirror without its field"),
    pytest.param(_route(_rule(_V2, filters=[
        {"type": "RequestMirror", "requestMirror": {
            "backendRef": {"kind": "MeshExternalService", "name": "x"}, "percentage": 101}},
        {"type": "RequestMirror", "requestMirror": {
            "backendRef": {"kind": "MeshService"}, "percentage": "half"}},
        {"type": "RequestMirror", "requestMirror": {
            "backendRef": {"kind": "MeshService", "name": "Bad_Name"}, "percentage": -0.5}},
        {"type": "RequestMirror", "urlRewrite": {"hostname": "a.b"}, "requestMirror": {
            "backendRef": _BACKEND, "percentage": "NaN"}}])),
                 ["spec.to[0].rules[0].default.filters[0].requestMirror.backendRef.kind: "
                  "'MeshExternalService' is not supported by meshlog yet (MeshService only)",
                  "spec.to[0].rules[0].default.filters[0].requestMirror.percentage: 101 is not "
                  "a number of percent in 0..100",
                  "spec.to[0].rules[0].default.filters[1].requestMirror.backendRef.name: is "
                  "required with kind MeshService",
                  "spec.to[0].rules[0].default.filters[1].requestMirror.percentage: 'half' is "
                  "not a number of percent in 0..100",
                  "spec.to[0].rules[0].default.filters[2].requestMirror.backendRef.name: "
                  "'Bad_Name' is not a valid MeshService name (RFC 1123 subdomain)",
                  "spec.to[0].rules[0].default.filters[2].requestMirror.percentage: -0.5 is "
                  "not a number of percent in 0..100",
                  "spec.to[0].rules[0].default.filters[3].urlRewrite: must not be defined "
                  "with type RequestMirror",
                  "spec.to[0].rules[0].default.filters[3].requestMirror.percentage: 'NaN' is "
                  "not a number of percent in 0..100"], id="RequestMirror's parts"),
    pytest.param(_route(_rule(_V2, filters=[{"type": "Fault"}])),
                 ["spec.to[0].rules[0].default.filters[0].type: 'Fault' is not one of "
                  "RequestHeaderModifier, ResponseHeaderModifier, URLRewrite, RequestRedirect, "
                  "RequestMirror"], id="unknown filter type"),
    pytest.param(_route(_rule(_V2, backendRefs=[{"kind": "MeshExternalService",
                                                 "name": "httpbin"}])),
                 ["spec.to[0].rules[0].default.backendRefs[0].kind: 'MeshExternalService' is "
                  "not supported by meshlog yet (MeshService only)"],
                 id="backendRef to a MeshExternalService"),
    pytest.param(_route(_rule(_V2, backendRefs=[{"kind": "MeshService"}])),
                 ["spec.to[0].rules[0].default.backendRefs[0].name: is required with kind "
                  "MeshService"], id="backendRef without a name"),
    pytest.param(_route(_rule(_V2, backendRefs=[{"kind": "MeshService", "name": "b",
                                                 "weight": 0}])),
                 ["spec.to[0].rules[0].default.backendRefs: every weight is 0: at least one "
                  "backendRef needs a weight above 0"], id="no weight at all"),
    pytest.param(_route(_rule(_V2), to={"kind": "MeshMultiZoneService", "name": "b"}),
                 ["spec.to[0].targetRef.kind: 'MeshMultiZoneService' is not supported by "
                  "meshlog yet (MeshService only)"], id="to a MeshMultiZoneService"),
    pytest.param(_route(_rule(_V2), to={"kind": "Mesh"}),
                 ["spec.to[0].targetRef.kind: 'Mesh' is not one of MeshService"],
                 id="to the Mesh"),
    pytest.param(_route(_rule(_V2), hostnames=["example.com"]),
                 ["spec.to[0].hostnames: must not be defined: hostnames are MeshGateway's, "
                  "which meshlog does not model"], id="hostnames"),
    pytest.param(_route(_rule(_V2), target={"kind": "MeshGateway", "name": "gw"}),
                 ["spec.targetRef.kind: 'MeshGateway' is not one of Mesh, MeshSubset, "
                  "MeshService, Dataplane"], id="top-level MeshGateway"),
    pytest.param(_route(to=_BACKEND),
                 ["spec.to[0].rules: [] must list at least one rule"], id="no rules"),
    pytest.param(_route(_rule({"headers": [{"name": "x", "type": "RegularExpression",
                                            "value": ""}]})),
                 ["spec.to[0].rules[0].matches[0].headers[0].value: '' is not a regular "
                  "expression Envoy takes: it must not be empty"],
                 id="empty regular expression"),
    pytest.param(_route(_rule({"headers": [{"name": "x y", "value": "1"},
                                           {"name": ":authority", "value": "a"}]})),
                 ["spec.to[0].rules[0].matches[0].headers[0].name: 'x y' is not an HTTP "
                  "header name (a token: letters, digits and !#$%&'*+-.^_`|~)"],
                 id="header name with a space; a pseudo-header may be matched"),
    pytest.param(_route(_rule(_V2, filters=[{"type": "RequestHeaderModifier",
                                             "requestHeaderModifier": {
                                                 "add": [{"name": "x-a", "value": "1\n2"}],
                                                 "remove": ["x\u0000"]}}])),
                 ["spec.to[0].rules[0].default.filters[0].requestHeaderModifier.remove[0]"
                  ".name: 'x\\x00' is not an HTTP header name (a token: letters, digits and "
                  "!#$%&'*+-.^_`|~)",
                  "spec.to[0].rules[0].default.filters[0].requestHeaderModifier.add[0].value: "
                  "'1\\n2' must not contain NUL, CR or LF (Envoy refuses them)"],
                 id="header value with a newline, name with NUL"),
    pytest.param(_route(_rule(_V2, backendRefs=[
        {"kind": "MeshService", "name": "a", "weight": 2**32 - 1},
        {"kind": "MeshService", "name": "b", "weight": 1}])),
                 ["spec.to[0].rules[0].default.backendRefs: weights sum to 4294967296: Envoy "
                  "takes at most 4294967295"], id="weights over Envoy's total"),
    pytest.param(_route(_rule(_V2, filters=[
        {"type": "URLRewrite", "urlRewrite": {"hostname": "a.example"}},
        {"type": "URLRewrite", "urlRewrite": {"path": {
            "type": "ReplacePrefixMatch", "replacePrefixMatch": "/a\nb"}}}])),
                 ["spec.to[0].rules[0].default.filters[1].urlRewrite.path.replacePrefixMatch: "
                  "'/a\\nb' must not contain NUL, CR or LF (Envoy refuses them)",
                  "spec.to[0].rules[0].default.filters[1].type: 'URLRewrite' may appear once "
                  "in a rule's filters"], id="URLRewrite twice, a replacement with a newline"),
    pytest.param(_route(_rule({"queryParams": [{"type": "Exact", "name": "q" * 1025,
                                                "value": "1"}]})),
                 ["spec.to[0].rules[0].matches[0].queryParams[0].name: '" + "q" * 32 + "'... "
                  "is longer than Envoy's 1024 bytes"], id="query parameter name over 1 KiB"),
    pytest.param(_route(
        _rule(_V2, filters=[{"type": "URLRewrite", "urlRewrite": {"path": {
            "type": "ReplacePrefixMatch", "replacePrefixMatch": "v3"}}}]),
        _rule({"path": {"type": "Exact", "value": "/a"}}, filters=[
            {"type": "URLRewrite", "urlRewrite": {"path": {
                "type": "ReplaceFullPath", "replaceFullPath": "b"}}}]),
        _rule({"path": {"type": "Exact", "value": "/c"}}, filters=[
            {"type": "URLRewrite", "urlRewrite": {"path": {
                "type": "ReplaceFullPath", "replaceFullPath": ""}}}])),
                 ["spec.to[0].rules[0].default.filters[0].urlRewrite.path.replacePrefixMatch: "
                  "'v3' must be an absolute path (start with /): Envoy would send it as the "
                  "request's path as it is",
                  "spec.to[0].rules[1].default.filters[0].urlRewrite.path.replaceFullPath: "
                  "'b' must be an absolute path (start with /): Envoy would send it as the "
                  "request's path as it is",
                  "spec.to[0].rules[2].default.filters[0].urlRewrite.path.replaceFullPath: "
                  "'' must be an absolute path (start with /): Envoy would send it as the "
                  "request's path as it is"], id="replacement paths not starting with /"),
    pytest.param(_route(_rule(_V2, filters=[
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "set": [{"name": "Transfer-Encoding", "value": "chunked"}],
            "add": [{"name": "connection", "value": "close"}],
            "remove": ["keep-alive", "upgrade"]}},
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
            "add": [{"name": "TE", "value": "gzip"}]}}])),
                 [f"spec.to[0].rules[0].default.filters[{i}].{m}HeaderModifier.{f}[0].name: "
                  f"{n!r} is a hop-by-hop header, which cannot be set or added here: Envoy "
                  "sends it on to the backend as it is, and drops it from a response or "
                  "resets an HTTP/2 stream"
                  for i, m, f, n in ((0, "request", "set", "Transfer-Encoding"),
                                     (0, "request", "add", "connection"),
                                     (1, "response", "add", "TE"))],
                 id="hop-by-hop headers set or added (removed: allowed)"),
])
def test_invalid_documents_name_the_field_and_value(raw: dict[str, Any],
                                                    expected: list[str]) -> None:
    assert _violations(raw) == expected


def test_every_violation_is_reported_at_once() -> None:
    raw = _route(_rule({"path": {"type": "PathPrefix", "value": "v2/"}, "method": "FETCH"},
                       filters=[{"type": "Fault"}]))

    assert [v.split(":")[0] for v in _violations(raw)] == [
        "spec.to[0].rules[0].matches[0].path.value",
        "spec.to[0].rules[0].matches[0].method",
        "spec.to[0].rules[0].default.filters[0].type"]


_HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager")
_ENVOY_CONFIG = """
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 10999}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": %s
          stat_prefix: x
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes:
              - match: {safe_regex: {regex: %s}}
                direct_response: {status: 200}
"""


@pytest.mark.parametrize("pattern", [
    "^/v[0-9]+/.*$", "/a(?=b)", r"(a)\1", "a{30}b{30}c{30}d{30}", "a{24}b{24}c{24}d{24}",
    "(" + "|".join(f"x{i}" for i in range(60)) + ")", "[", r"\pN+", r"\pN{60}", "é{60}",
    "é{90}", r"[\x{100}-\x{10000}]", "(?i)/API"])
def test_a_regular_expression_is_refused_exactly_when_envoy_refuses_it(
        pattern: str, tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(_ENVOY_CONFIG % (_HCM, json.dumps(pattern)))  # JSON is YAML
    envoy = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(config)],
                           capture_output=True, text=True, timeout=60)
    refused = bool(_regex_violations(pattern))
    assert refused == (envoy.returncode != 0), envoy.stdout + envoy.stderr


def _regex_violations(pattern: str) -> list[str]:
    doc = _route(_rule({"path": {"type": "RegularExpression", "value": pattern}}))
    try:
        decode_resource(doc)
    except InvalidResource as exc:
        return [str(v) for v in exc.violations]
    return []
