"""MeshTimeout to Envoy: the timeouts of a proxy's outbounds to MeshService ports (`to[]`)
and of its inbounds (`from[]` or `rules[]`, 5).

What applies, precisely (Kuma 2.x's rules for `to[]`, `pkg/plugins/policies/core`, where not
said otherwise):

1. **Which policies.** A MeshTimeout of the proxy's mesh applies to a Dataplane when its
   top-level targetRef selects it: `Mesh`, always; `MeshSubset`, when one of its inbounds
   (not `Ignored`, as in Kuma) carries every one of `tags` (no tags: every Dataplane with
   such an inbound); `MeshService`, when that MeshService's selector matches one of them;
   `Dataplane`, by `name`, or when the Dataplane has every one of `labels`. Kinds this
   release does not know select nothing.
2. **Order.** The `to[]` entries of the applying policies are sorted (Kuma's
   `rules/outbound.Sort`, stable) by the specificity of their policy's top-level targetRef
   (Mesh < MeshSubset < MeshService < Dataplane by labels < Dataplane by name: Kuma 2.x's
   `CompareDataplaneKind`), then by their own targetRef's (Mesh <
   MeshService), then by their policy's name, descending (Kuma's `CompareByDisplayName`:
   the alphabetically first name comes last); one policy's entries keep their order.
3. **Per destination.** For the outbound to MeshService `s`, the entries whose targetRef is
   `Mesh` or `MeshService` named `s` are taken in the order of 2 and their `default`s merged
   field by field (`connectionTimeout`, `idleTimeout` and each `http.*` on its own): a later
   entry's value replaces an earlier one's, a field it leaves out keeps the earlier value.
   So the more specific policy wins, whatever its entry's kind (a Dataplane's policy's Mesh
   entry beats a Mesh-wide policy's MeshService entry), then, within policies of one kind,
   a MeshService entry beats a Mesh entry, then the alphabetically first name wins. A
   MeshMultiZoneService outbound takes the Mesh entries only. Not modelled: Kuma's next
   keys, a zone's own policy over global's (`kuma.io/origin`) and the policy role; meshlog
   zones take policies from global only (another zone's are not synced), but a zone's own
   MeshTimeout and global's are ordered by the keys above alone.
4. **No default.** A field no entry sets keeps what meshlog sets without a MeshTimeout
   (connect timeout 5 s, no request timeout, stream idle 30 min, Envoy's defaults for the
   rest). Kuma's built-in defaults (15 s request timeout, 1 h idle, ...) come from the
   default MeshTimeout it creates with a mesh; meshlog creates no policies, so without one
   the config is exactly what it was before MeshTimeout existed.

What each field sets (Kuma's mapping, `meshtimeout/plugin/xds/configurer.go`):

| field                        | L4 outbound (tcp_proxy)   | L7 outbound (`http`, `http2`, `grpc`) |
|------------------------------|---------------------------|---------------------------------------|
| `connectionTimeout`          | cluster `connect_timeout` | cluster `connect_timeout`             |
| `idleTimeout`                | tcp_proxy `idle_timeout`  | cluster (1) and HCM `idle_timeout` (2)|
| `http.requestTimeout`        | -                         | the route's `timeout`                 |
| `http.streamIdleTimeout`     | -                         | HCM `stream_idle_timeout`             |
| `http.maxStreamDuration`     | -                         | cluster `max_stream_duration` (1)     |
| `http.maxConnectionDuration` | -                         | cluster `max_connection_duration` (1) |
| `http.requestHeadersTimeout` | -                         | HCM `request_headers_timeout`         |

(1) in the cluster's `HttpProtocolOptions.common_http_protocol_options` (to the endpoints);
(2) the HCM's `common_http_protocol_options` (from the app).

**meshlog's deviations.** Kuma sets the L7 outbound's downstream idle timeout (the HCM's) to
0, never, because its legacy Timeout policy put `idleTimeout` there; meshlog sets it to
`idleTimeout` too, so connections from the app are closed like those to the endpoints.
Kuma puts `streamIdleTimeout` on the route; every route of an outbound here (one, or a
MeshHTTPRoute's) takes the same value, so the HCM's is the same thing, and it is where
meshlog's 30 min default lives. Kuma leaves a `grpc`
port's cluster without the HTTP options; here `grpc` is HTTP/2 like `http2` and gets them.
Proxyless gRPC clients get the earlier of `http.requestTimeout` and `http.maxStreamDuration`
as their routes' `max_stream_duration`, the only timeout gRPC's xDS client reads
(`proxyless_policies.py`), and nothing else. A top-level targetRef that selects no proxy is
accepted and does nothing.

5. **Inbounds** (Kuma's `applyToInbounds`, `rules/inbound`). Per inbound (not `Ignored`),
   the policies of 1 whose top-level targetRef selects that inbound (Kuma's
   `matchedPoliciesByInbound`: `Mesh` and `Dataplane` every inbound, `MeshSubset` those
   with its tags, `MeshService` those its selector matches) have their inbound entries
   taken in the order of 2 (Kuma's `rules/inbound.Sort`: the top-level targetRef's
   specificity, then the name, the alphabetically first last) and their `default`s merged
   field by field as in 3. A policy's inbound entries are its `rules[]` (Kuma 2.13+) or its
   `from[]` (all `targetRef: Mesh`, validation takes no other kind), never both (validation,
   as Kuma's); a rule is a `from[]` entry by another name (Kuma's `getEntries` reads a
   `from[]` entry as a rule without matches), so a `rules[]` policy and a `from[]` one are
   ordered by the keys of 2 alone, whichever form each is written in. When at
   least one entry applies to it, the inbound takes the result on its local cluster and
   its listener, with the table's mapping for the
   inbound's protocol (`protocol`, or its `kuma.io/protocol` tag: L7 for `http`, `http2`,
   `grpc`), and the fields no entry sets take Kuma's defaults, as Kuma's configurer writes
   them then: `connectionTimeout` 5 s, `idleTimeout` 1 h, `http.requestTimeout` 15 s,
   `http.streamIdleTimeout` 30 min; Kuma's `0s` for `requestHeadersTimeout`,
   `maxStreamDuration` and `maxConnectionDuration` (none) is left out, which Envoy reads
   as none too. So an L7 inbound under a `from[]` that sets only `idleTimeout` ends a
   request after 15 s, as Kuma's does. An inbound no `from[]` entry applies to is as
   without MeshTimeout (no request timeout): unlike Kuma, which also writes its defaults
   on the inbounds of a proxy that only a `to[]` policy selects. As on outbounds, the
   inbound HCM's downstream `idle_timeout` takes `idleTimeout` (Kuma writes 0 there) and
   `streamIdleTimeout` goes on the HCM (Kuma: the route; an inbound has one). Not
   modelled: a rule's `matches` (spiffeID, SNI; validation refuses them, so every rule
   applies to all of an inbound's traffic) and the next keys of Kuma's sort (origin,
   policy role).
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.protocol_pb2 import Http1ProtocolOptions
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (  # noqa: E501
    HttpConnectionManager,
)
from envoy.extensions.upstreams.http.v3.http_protocol_options_pb2 import HttpProtocolOptions
from msgspec import Struct

from events import Dataplane, Inbound, MeshTimeout, TargetRef
from events.resources import MeshTimeoutConf, MeshTimeoutFrom, go_duration_ns
from projections import MeshServiceRow
from xds_gateway.resources import policy_rules
from xds_gateway.resources.listeners import HTTP_PROTOCOLS, edit_filters, forwarding_routes

__all__ = ["NO_TIMEOUTS", "Applying", "Timeouts", "applying", "for_cluster", "for_destination",
           "for_inbounds", "for_listener", "merged", "timed_cluster", "timed_listener"]

_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


class Timeouts(Struct, frozen=True, kw_only=True):
    """The merged timeouts of one outbound or of the inbounds, in nanoseconds; None: not set
    by any entry (nor, on inbounds, by Kuma's defaults).
    Hashable, so it is part of the cache keys of the resources it changes."""

    connection: int | None = None
    idle: int | None = None
    request: int | None = None
    stream_idle: int | None = None
    max_stream: int | None = None
    max_connection: int | None = None
    request_headers: int | None = None


_NOTHING = Timeouts()


Applying = policy_rules.Applying
NO_TIMEOUTS = policy_rules.NOTHING_APPLIES


def for_destination(policies: Applying, service: str | None) -> Timeouts | None:
    """The merged timeouts of the outbound to MeshService `service` (None: a
    MeshMultiZoneService, Mesh entries only) under `policies` (rule 3); None when no entry
    is about it."""
    return policies.for_destination(service, Timeouts)


_S = 1_000_000_000
_INBOUND_DEFAULTS = {"connection": 5 * _S, "idle": 3600 * _S, "request": 15 * _S,
                     "stream_idle": 30 * 60 * _S}
"""Kuma's defaults (`policies/core/defaults`) for the fields no `from[]` entry sets (5)."""


def _with_inbound_defaults(**fields: int) -> Timeouts:
    return Timeouts(**{**_INBOUND_DEFAULTS, **fields})


def for_inbounds(policies: Applying, dataplane: Dataplane,
                 services: Mapping[str, MeshServiceRow]) -> tuple[Timeouts | None, ...]:
    """The timeouts each of `dataplane`'s inbounds (in `networking.inbound`'s order) takes
    under `policies` (5): the merged inbound entries (`from[]` or `rules[]`) of the
    policies that select that inbound, over Kuma's defaults; None for an inbound no entry
    applies to (it stays as without MeshTimeout); `()` when none applies to any.
    `for_cluster` and `for_listener` pick each resource's part."""
    if not policies.inbound:
        return ()
    every = tuple(_for_inbound(policies, dataplane, i, services)
                  for i in dataplane.networking.inbound)
    return every if any(t is not None for t in every) else ()


def _for_inbound(policies: Applying, dataplane: Dataplane, inbound: Inbound,
                 services: Mapping[str, MeshServiceRow]) -> Timeouts | None:
    fields = _MERGE.for_inbound(policies, dataplane, inbound, services)
    return None if fields is None else _with_inbound_defaults(**fields)


def for_cluster(timeouts: Timeouts | None, protocol: str) -> Timeouts | None:
    """What of `timeouts` the EDS cluster of a port of `protocol` (or the local cluster of
    an inbound of `protocol`) takes (None: nothing):
    both what `timed_cluster` reads and its cache key, so equal clusters are encoded once."""
    if timeouts is None:
        return None
    if protocol not in HTTP_PROTOCOLS:
        part = Timeouts(connection=timeouts.connection)
    else:
        part = Timeouts(connection=timeouts.connection, idle=timeouts.idle,
                        max_stream=timeouts.max_stream, max_connection=timeouts.max_connection)
    return None if part == _NOTHING else part


def for_listener(timeouts: Timeouts | None, protocol: str) -> Timeouts | None:
    """What of `timeouts` the outbound listener of a port of `protocol` (or an inbound
    listener of `protocol`) takes (None: nothing), as `for_cluster`."""
    if timeouts is None:
        return None
    if protocol not in HTTP_PROTOCOLS:
        part = Timeouts(idle=timeouts.idle)
    else:
        part = Timeouts(idle=timeouts.idle, request=timeouts.request,
                        stream_idle=timeouts.stream_idle,
                        request_headers=timeouts.request_headers)
    return None if part == _NOTHING else part


def timed_cluster(cluster: Cluster, timeouts: Timeouts | None) -> Cluster:
    """`cluster` (an outbound's EDS cluster, an inbound's local one) with `timeouts`
    (`for_cluster`'s) set."""
    if timeouts is None:
        return cluster
    if timeouts.connection is not None:
        cluster.connect_timeout.CopyFrom(_duration(timeouts.connection))
    http = (timeouts.idle, timeouts.max_stream, timeouts.max_connection)
    if all(v is None for v in http):
        return cluster
    options = HttpProtocolOptions()
    if _HTTP_OPTIONS in cluster.typed_extension_protocol_options:
        cluster.typed_extension_protocol_options[_HTTP_OPTIONS].Unpack(options)
    else:  # HTTP/1.1 to the endpoints, as without the options
        options.explicit_http_config.http_protocol_options.CopyFrom(Http1ProtocolOptions())
    common = options.common_http_protocol_options
    for name, value in zip(("idle_timeout", "max_stream_duration", "max_connection_duration"),
                           http, strict=True):
        if value is not None:
            getattr(common, name).CopyFrom(_duration(value))
    cluster.typed_extension_protocol_options[_HTTP_OPTIONS].Pack(options)
    return cluster


def timed_listener(listener: Listener, timeouts: Timeouts | None) -> Listener:
    """`listener` (an outbound's or an inbound's) with `timeouts` (`for_listener`'s) set on
    its tcp_proxies and HttpConnectionManagers (every filter chain's)."""
    if timeouts is None:
        return listener
    idle = timeouts.idle
    return edit_filters(
        listener, hcm=lambda hcm: _timed_hcm(hcm, timeouts),
        tcp_proxy=None if idle is None else lambda proxy: proxy.idle_timeout.CopyFrom(
            _duration(idle)))


def _timed_hcm(hcm: HttpConnectionManager, timeouts: Timeouts) -> None:
    if timeouts.request is not None:
        for action in forwarding_routes(hcm):
            action.timeout.CopyFrom(_duration(timeouts.request))
    if timeouts.stream_idle is not None:
        hcm.stream_idle_timeout.CopyFrom(_duration(timeouts.stream_idle))
    if timeouts.request_headers is not None:
        hcm.request_headers_timeout.CopyFrom(_duration(timeouts.request_headers))
    if timeouts.idle is not None:
        hcm.common_http_protocol_options.idle_timeout.CopyFrom(_duration(timeouts.idle))


def _fields(conf: MeshTimeoutConf) -> dict[str, int]:
    http = conf.http
    given = {
        "connection": conf.connection_timeout,
        "idle": conf.idle_timeout,
        "request": http.request_timeout if http else None,
        "stream_idle": http.stream_idle_timeout if http else None,
        "max_stream": http.max_stream_duration if http else None,
        "max_connection": http.max_connection_duration if http else None,
        "request_headers": http.request_headers_timeout if http else None,
    }
    out = {}
    for name, value in given.items():
        ns = None if value is None else go_duration_ns(value)
        if ns is not None and ns >= 0:  # validation refused the others
            out[name] = ns
    return out


_duration = policy_rules.proto_duration


_MESH = TargetRef(kind="Mesh")


def _from(policy: MeshTimeout) -> list[MeshTimeoutFrom]:
    """A policy's inbound entries (5): its `rules[]` when it has any, each as a `from[]`
    entry with targetRef `Mesh` (Kuma's `rules/inbound.getEntries` takes a policy's rules
    first, its `from[]` otherwise, as rules without matches: `ruleEntryAdapter`)."""
    spec = policy.spec
    if spec.rules:
        return [MeshTimeoutFrom(target_ref=_MESH, default=rule.default) for rule in spec.rules]
    return spec.from_


_MERGE: policy_rules.Merge[MeshTimeout] = policy_rules.Merge(_fields, inbound=_from)
applying = _MERGE.applying
"""The MeshTimeouts (rows of the Dataplane's mesh) that apply to `dataplane` (rules 1, 2)."""
merged = _MERGE.merged
"""Rule 2 over the MeshTimeouts given, as per-field last values (`to[]` and `from[]`)."""
