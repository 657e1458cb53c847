"""MeshTimeout (Kuma 2.x, `pkg/plugins/policies/meshtimeout`): connection and HTTP timeouts
of the selected proxies' outbounds and inbounds, and Go durations (`1s`, `500ms`, `1h30m`),
which Kuma's policies are written in."""

from __future__ import annotations

import re

from msgspec import field

from events.resources._base import MeshScopedResource, _Base
from events.resources._policies import TargetRef

__all__ = [
    "MeshTimeout",
    "MeshTimeoutConf",
    "MeshTimeoutFrom",
    "MeshTimeoutHttp",
    "MeshTimeoutMatch",
    "MeshTimeoutRule",
    "MeshTimeoutSpec",
    "MeshTimeoutTo",
    "go_duration_ns",
]

_GO_DURATION = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
            "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_MAX_NS = 2**63 - 1  # Go's time.Duration is an int64 of nanoseconds
_MAX_WHOLE_DIGITS = 19  # past 2**63 in any unit: Go's leadingInt overflows
_FRACTION_DIGITS = 30  # the digits past these are worth less than 10**-17 ns


def go_duration_ns(value: str) -> int | None:
    """A duration as Go's `time.ParseDuration` reads it (Kuma's `metav1.Duration`), in
    nanoseconds: `1s`, `1.5s`, `500ms`, `1h30m`, `0`, `-2s`; None if it is not one (`d` is
    not a Go unit; a number without a unit is one only when it is 0)."""
    text, sign = value, 1
    if text[:1] in ("-", "+"):
        sign, text = (-1 if text[0] == "-" else 1), text[1:]
    if text == "0":
        return 0
    if not text:
        return None
    total, at = 0, 0
    for match in _GO_DURATION.finditer(text):
        if match.start() != at:
            return None
        # exact, each part's fraction of a nanosecond dropped, as Go does (`1.5ns` is 1);
        # the digits bounded first, so a long number costs no more than a short one (and
        # stays under Python's limit of digits an int may be read from)
        whole, _, fraction = match.group(1).partition(".")
        whole, fraction = whole.lstrip("0"), fraction[:_FRACTION_DIGITS]
        if len(whole) > _MAX_WHOLE_DIGITS:
            return None
        scale = 10 ** len(fraction)
        total += ((int(whole or "0") * scale + int(fraction or "0"))
                  * _UNIT_NS[match.group(2)] // scale)
        at = match.end()
    if at != len(text) or total > _MAX_NS:
        return None
    return sign * total


class MeshTimeoutHttp(_Base, frozen=True):
    request_timeout: str | None = None
    """From the request's start to the end of the response (Envoy's route `timeout`);
    `0s` disables it."""
    stream_idle_timeout: str | None = None
    """How long a stream may see no activity (the route's `idle_timeout`)."""
    max_stream_duration: str | None = None
    """The longest a stream to the destination may last (the cluster's)."""
    max_connection_duration: str | None = None
    """After how long a connection to the destination is drained (the cluster's)."""
    request_headers_timeout: str | None = None
    """How long the app may take to send a request's headers (the HCM's)."""


class MeshTimeoutConf(_Base, frozen=True):
    connection_timeout: str | None = None
    """How long the proxy waits for a TCP connection to an endpoint (the cluster's)."""
    idle_timeout: str | None = None
    """How long a connection may carry nothing: tcp_proxy's `idle_timeout` over L4; over
    L7 the connections to the endpoints (the cluster's) and from the app (the HCM's)."""
    http: MeshTimeoutHttp | None = None


class MeshTimeoutTo(_Base, frozen=True):
    target_ref: TargetRef
    """The destinations this entry is about: Mesh (all) or MeshService `name`."""
    default: MeshTimeoutConf


class MeshTimeoutFrom(_Base, frozen=True):
    target_ref: TargetRef
    """Mesh: every client of the selected proxies' inbounds (each inbound's listener and
    local cluster)."""
    default: MeshTimeoutConf


class MeshTimeoutSpiffeIdMatch(_Base, frozen=True):
    type: str
    """`Exact` or `Prefix`."""
    value: str


class MeshTimeoutSniMatch(_Base, frozen=True):
    type: str
    """`Exact`."""
    value: str


class MeshTimeoutMatch(_Base, frozen=True):
    """Kuma 2.14's `common_api.Match`: which of an inbound's traffic a rule is about, by
    the client's SPIFFE ID or the connection's SNI. Part of the schema so that a policy
    written for Kuma decodes; validation refuses it (meshlog applies a rule to all of an
    inbound's traffic)."""

    spiffe_id: MeshTimeoutSpiffeIdMatch | None = field(name="spiffeID", default=None)
    sni: MeshTimeoutSniMatch | None = None


class MeshTimeoutRule(_Base, frozen=True):
    """An entry of `rules[]` (Kuma 2.13+): `default` applies to every inbound the top-level
    targetRef selects, as a `from[]` entry with targetRef `Mesh` does."""

    default: MeshTimeoutConf
    matches: list[MeshTimeoutMatch] = []
    """Refused unless empty (validation)."""


class MeshTimeoutSpec(_Base, frozen=True, kw_only=True):
    target_ref: TargetRef = TargetRef(kind="Mesh")
    """The proxies whose outbounds it sets: Mesh (default), MeshSubset, MeshService or
    Dataplane."""
    to: list[MeshTimeoutTo] = []
    from_: list[MeshTimeoutFrom] = field(name="from", default_factory=list)
    """The timeouts of the selected proxies' inbounds (`xds_gateway.resources.timeouts`,
    5)."""
    rules: list[MeshTimeoutRule] = []
    """The same, Kuma's newer form (a policy has `rules[]` or `to[]`/`from[]`, not both);
    left out of the encoding when empty, so a policy without it has the bytes it had."""


class MeshTimeout(MeshScopedResource, frozen=True, kw_only=True, tag="MeshTimeout"):
    """Timeouts of the selected proxies' outbounds to MeshService ports and of their
    inbounds. Semantics (which policies apply, how `to[]` and `from[]` entries merge, what
    each field sets in Envoy):
    `xds_gateway.resources.timeouts`."""

    spec: MeshTimeoutSpec
