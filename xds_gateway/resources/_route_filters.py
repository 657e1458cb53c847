"""What a MeshHTTPRoute rule's URLRewrite, RequestRedirect and RequestMirror filters set on
an Envoy route (`http_routes`' table): path rewrites shared by a forwarded route's
`RouteAction` and a redirect's `RedirectAction`, the redirect itself, and a mirror's
`RequestMirrorPolicy`."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

from envoy.config.core.v3.base_pb2 import RuntimeFractionalPercent
from envoy.config.route.v3.route_components_pb2 import RedirectAction, RouteAction
from envoy.type.matcher.v3.regex_pb2 import RegexMatchAndSubstitute, RegexMatcher
from envoy.type.v3.percent_pb2 import FractionalPercent

from events.resources import HttpRouteFilter, HttpRouteMatch, PathRewrite, RequestRedirect

__all__ = ["mirror_fraction", "mirror_policy", "redirect", "rewrite"]

_CODES = {301: RedirectAction.MOVED_PERMANENTLY, 302: RedirectAction.FOUND,
          303: RedirectAction.SEE_OTHER, 307: RedirectAction.TEMPORARY_REDIRECT,
          308: RedirectAction.PERMANENT_REDIRECT}


def rewrite(f: HttpRouteFilter, match: HttpRouteMatch, action: RouteAction) -> None:
    """A URLRewrite filter `f` on the forwarding `action` of a route of `match`."""
    url_rewrite = f.url_rewrite
    if url_rewrite is None:
        return
    if url_rewrite.hostname is not None:
        action.host_rewrite_literal = url_rewrite.hostname
    if url_rewrite.path is not None:
        _path(url_rewrite.path, match, action)


def redirect(r: RequestRedirect, match: HttpRouteMatch) -> RedirectAction:
    """Kuma's `requestRedirect`: the parts given replace the request's in `Location`; the
    status is 302 unless given (Kuma's CRD default)."""
    action = RedirectAction(response_code=_CODES[r.status_code or 302])
    if r.scheme is not None:
        action.scheme_redirect = r.scheme
    if r.hostname is not None:
        action.host_redirect = r.hostname
    if r.port is not None:
        action.port_redirect = r.port
    if r.path is not None:
        _path(r.path, match, action)
    return action


def _path(p: PathRewrite, match: HttpRouteMatch, action: RouteAction | RedirectAction) -> None:
    """A path rewrite, the same in a forwarded request and in a redirect's `Location` (both
    actions have `prefix_rewrite` and `regex_rewrite`, applied to the path without its
    query)."""
    if p.type == "ReplaceFullPath" and p.replace_full_path is not None:
        action.regex_rewrite.CopyFrom(_regex_rewrite("^.*$", p.replace_full_path))
        return
    prefix, replacement = match.path, p.replace_prefix_match
    if prefix is None or replacement is None:  # validation refused these
        return
    if prefix.value == "/":  # `/x` under `/` becomes `<replacement>/x`
        action.regex_rewrite.CopyFrom(_regex_rewrite("^/", replacement.rstrip("/") + "/"))
    elif replacement == "":  # Gateway API's `/`; Envoy reads an empty prefix_rewrite as none
        action.regex_rewrite.CopyFrom(_regex_rewrite(f"^{re.escape(prefix.value)}/*", "/"))
    elif replacement.endswith("/"):  # `/v2/x` with `/` becomes `/x`, never `//x`
        action.regex_rewrite.CopyFrom(_regex_rewrite(f"^{re.escape(prefix.value)}/*",
                                                     replacement))
    else:
        action.prefix_rewrite = replacement


def _regex_rewrite(pattern: str, replacement: str) -> RegexMatchAndSubstitute:
    """`replacement` literally: RE2's substitution reads `\\N` as a capture group (Envoy
    leaves a path whose substitution names a missing group unrewritten), so a backslash is
    escaped."""
    return RegexMatchAndSubstitute(pattern=RegexMatcher(regex=pattern),
                                   substitution=replacement.replace("\\", "\\\\"))


def mirror_fraction(percentage: int | float | str | None) -> tuple[int, int] | None:
    """Kuma's `ConvertPercentage` of a mirror's percentage, as (numerator, denominator in
    100, 10 000 or 1 000 000): a whole percent in hundredths, one of at most two decimals
    in ten-thousandths, else millionths rounded (half away from zero, Go's `math.Round`);
    None (none given): every request, Envoy's default."""
    if percentage is None:
        return None
    value = Decimal(str(percentage))  # validated: a finite number in 0..100
    if value == value.to_integral_value():
        return int(value), 100
    if value * 100 == (value * 100).to_integral_value():
        return int(value * 100), 10_000
    return int((value * 10_000).quantize(Decimal(1), rounding=ROUND_HALF_UP)), 1_000_000


_DENOMINATOR = {100: FractionalPercent.HUNDRED, 10_000: FractionalPercent.TEN_THOUSAND,
                1_000_000: FractionalPercent.MILLION}


def mirror_policy(cluster: str, fraction: tuple[int, int] | None
                  ) -> RouteAction.RequestMirrorPolicy:
    policy = RouteAction.RequestMirrorPolicy(cluster=cluster)
    if fraction is not None:
        numerator, denominator = fraction
        policy.runtime_fraction.CopyFrom(RuntimeFractionalPercent(default_value=FractionalPercent(
            numerator=numerator, denominator=_DENOMINATOR[denominator])))
    return policy
