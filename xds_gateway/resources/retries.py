"""MeshRetry to Envoy: how a proxy retries connections and requests to its outbounds.

Which MeshRetries apply to a proxy, the order of their `to[]` entries and how they merge per
destination are MeshTimeout's rules 1-3 (`timeouts.py`, shared code in `policy_rules.py`):
the more specific policy wins, then a MeshService entry over a Mesh entry, then the
alphabetically first name; each field merges on its own (`backOff.baseInterval` and
`backOff.maxInterval` too), a `retryOn` list is replaced whole. A MeshMultiZoneService
outbound takes the Mesh entries only. No MeshRetry, or no entry about a destination: its
config is exactly what it is without MeshRetry (meshlog creates no default policy, Kuma does).

What each field sets (Kuma's mapping, `meshretry/plugin/xds/configurer.go`):

| field                     | outbound of a port of protocol | Envoy                              |
|---------------------------|--------------------------------|------------------------------------|
| `tcp.maxConnectAttempt`   | `tcp` (tcp_proxy)              | tcp_proxy `max_connect_attempts`   |
| `http.numRetries`         | `http`, `http2`                | route `retry_policy.num_retries`   |
| `http.perTryTimeout`      | `http`, `http2`                | `retry_policy.per_try_timeout`     |
| `http.backOff.*`          | `http`, `http2`                | `retry_policy.retry_back_off`      |
| `http.retryOn`            | `http`, `http2`                | `retry_policy.retry_on` (1)        |
| `grpc.*`                  | `grpc`                         | the same fields of `retry_policy`  |

(1) joined with commas; HTTP status codes (`"503"`) go to `retriable_status_codes` and add
`retriable-status-codes` to `retry_on`. Left out, or a list of status codes only, `retry_on`
is Kuma's default (plus `retriable-status-codes` for the codes):
`gateway-error,connect-failure,refused-stream` (HTTP) and
`cancelled,connect-failure,gateway-error,refused-stream,reset,resource-exhausted,unavailable`
(gRPC). `numRetries` left out: Envoy's 1; `numRetries: 0`: no retry policy (Kuma's).
`perTryTimeout: 0s`: `per_try_timeout` 0, none (Kuma's API), so a MeshService entry can
lift a Mesh entry's. `retryOn` in Kuma's API spelling (`GatewayError`, `Canceled`; `All5xx`,
the name of Kuma's constant for `5xx`) is Envoy's value (`gateway-error`, `cancelled`,
`5xx`).

**meshlog's deviations.** Kuma gives an `http2` port no retries (its configurer knows
`http` and `grpc` only); meshlog applies the `http` section to `http2` ports too, and `tcp`
to every L4 outbound (`tls`, `kafka`, `mysql` ports too; Kuma: `tcp` only). gRPC's
`Canceled` is Envoy's `cancelled` (Kuma writes `canceled`, which Envoy ignores). A `backOff`
with only `maxInterval` gets Envoy's default base (25 ms, or `maxInterval` when that is
less), as Envoy requires a base. Two entries whose merged `maxInterval` is below the merged
`baseInterval` (each entry valid; Envoy would refuse the listener update, as it would
Kuma's): the later entry's interval holds and the other is set to it. `retryOn` takes no
`HttpMethod*` values, and the Envoy spellings `retriable-status-codes` and
`retriable-headers` are accepted as they are. Proxyless gRPC clients get the `grpc`
section on their routes, as far as gRPC's xDS client reads it (`proxyless_policies.py`: no
`perTryTimeout`, only gRPC's conditions), whatever the port's protocol. Not modelled
(refused as unknown fields): `retriableResponseHeaders`, `retriableRequestHeaders`,
`rateLimitedBackOff`, `hostSelection`, `hostSelectionRetryMaxAttempts`.
"""

from __future__ import annotations

from typing import Any

from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_components_pb2 import RetryPolicy
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (  # noqa: E501
    HttpConnectionManager,
)
from envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2 import TcpProxy
from msgspec import Struct

from events import MeshRetry
from events.resources import KUMA_GRPC_RETRY_ON, KUMA_RETRY_ON, MeshRetryConf
from xds_gateway.resources import policy_rules
from xds_gateway.resources.listeners import HTTP_PROTOCOLS, edit_filters, forwarding_routes

__all__ = ["NO_RETRIES", "Applying", "Retries", "applying", "for_destination", "for_listener",
           "merged", "retried_listener"]

_HTTP_DEFAULT = ("gateway-error", "connect-failure", "refused-stream")
_GRPC_DEFAULT = ("cancelled", "connect-failure", "gateway-error", "refused-stream", "reset",
                 "resource-exhausted", "unavailable")
_ENVOY_BASE_NS = 25_000_000


class Retries(Struct, frozen=True, kw_only=True):
    """The merged retries of one outbound (durations in nanoseconds); None: not set by any
    entry. Hashable: part of the cache key of the listener it changes."""

    connect_attempts: int | None = None
    http_retries: int | None = None
    http_per_try: int | None = None
    http_base: int | None = None
    http_max: int | None = None
    http_on: tuple[str, ...] | None = None
    grpc_retries: int | None = None
    grpc_per_try: int | None = None
    grpc_base: int | None = None
    grpc_max: int | None = None
    grpc_on: tuple[str, ...] | None = None


_NOTHING = Retries()


Applying = policy_rules.Applying
NO_RETRIES = policy_rules.NOTHING_APPLIES


def for_destination(policies: Applying, service: str | None) -> Retries | None:
    """The merged retries of the outbound to MeshService `service` (None: a
    MeshMultiZoneService, Mesh entries only); None when no entry is about it."""
    last = policy_rules.last_by_destination(policies.mesh, policies.services, service)
    if last is None:
        return None
    for prefix in ("http", "grpc"):
        base, top = last.get(f"{prefix}_base"), last.get(f"{prefix}_max")
        if base is not None and top is not None and top[1] < base[1]:
            # two entries' intervals, each valid, merged into a maxInterval below the
            # baseInterval, which Envoy refuses (and the whole listener update with it): the
            # later entry's interval holds, the other is set to it
            if base[0] > top[0]:
                last[f"{prefix}_max"] = base
            else:
                last[f"{prefix}_base"] = top
    return Retries(**{field: value for field, (_, value) in last.items()})


def for_listener(retries: Retries | None, protocol: str) -> Retries | None:
    """What of `retries` the outbound listener of a port of `protocol` takes (None:
    nothing): both what `retried_listener` reads and its cache key."""
    if retries is None:
        return None
    if protocol == "grpc":
        part = Retries(grpc_retries=retries.grpc_retries, grpc_per_try=retries.grpc_per_try,
                       grpc_base=retries.grpc_base, grpc_max=retries.grpc_max,
                       grpc_on=retries.grpc_on)
    elif protocol in HTTP_PROTOCOLS:
        part = Retries(http_retries=retries.http_retries, http_per_try=retries.http_per_try,
                       http_base=retries.http_base, http_max=retries.http_max,
                       http_on=retries.http_on)
    else:
        part = Retries(connect_attempts=retries.connect_attempts)
    return None if part == _NOTHING else part


def retried_listener(listener: Listener, retries: Retries | None) -> Listener:
    """`listener` (an outbound's) with `retries` (`for_listener`'s) set on its tcp_proxy or
    its HttpConnectionManager's routes."""
    if retries is None:
        return listener
    attempts, policy = retries.connect_attempts, _retry_policy(retries)

    def retried_proxy(proxy: TcpProxy) -> None:
        proxy.max_connect_attempts.value = attempts

    def retried_hcm(hcm: HttpConnectionManager) -> None:
        for action in forwarding_routes(hcm):
            action.retry_policy.CopyFrom(policy)

    return edit_filters(listener, tcp_proxy=retried_proxy if attempts is not None else None,
                        hcm=retried_hcm if policy is not None else None)


def _retry_policy(r: Retries) -> RetryPolicy | None:
    grpc = any(v is not None for v in (r.grpc_retries, r.grpc_per_try, r.grpc_base,
                                       r.grpc_max, r.grpc_on))
    if grpc:
        num, per_try, base, top, on = (r.grpc_retries, r.grpc_per_try, r.grpc_base,
                                       r.grpc_max, r.grpc_on or _GRPC_DEFAULT)
    elif any(v is not None for v in (r.http_retries, r.http_per_try, r.http_base,
                                     r.http_max, r.http_on)):
        num, per_try, base, top, on = (r.http_retries, r.http_per_try, r.http_base,
                                       r.http_max, r.http_on or _HTTP_DEFAULT)
    else:
        return None
    if num == 0:  # Kuma: no retries, no policy
        return None
    policy = RetryPolicy()
    codes = [int(v) for v in on if v.isdigit()]
    # status codes only: Kuma's default conditions stay, `retriable-status-codes` added
    conditions = [v for v in on if not v.isdigit()] or list(
        _GRPC_DEFAULT if grpc else _HTTP_DEFAULT)
    if codes:
        policy.retriable_status_codes.extend(codes)
        if "retriable-status-codes" not in conditions:
            conditions.append("retriable-status-codes")
    policy.retry_on = ",".join(conditions)
    if num is not None:
        policy.num_retries.value = num
    if per_try is not None:
        policy.per_try_timeout.CopyFrom(policy_rules.proto_duration(per_try))
    if base is not None or top is not None:
        if base is None:
            base = min(_ENVOY_BASE_NS, top or _ENVOY_BASE_NS)
        policy.retry_back_off.base_interval.CopyFrom(policy_rules.proto_duration(base))
        if top is not None:
            policy.retry_back_off.max_interval.CopyFrom(policy_rules.proto_duration(top))
    return policy


def _fields(conf: MeshRetryConf) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if conf.tcp is not None and conf.tcp.max_connect_attempt is not None:
        out["connect_attempts"] = conf.tcp.max_connect_attempt
    for prefix, section in (("http", conf.http), ("grpc", conf.grpc)):
        if section is None:
            continue
        back_off = section.back_off
        given: dict[str, Any] = {
            "retries": section.num_retries,
            "per_try": policy_rules.non_negative_ns(  # 0s: none, over a Mesh one
                section.per_try_timeout),
            "base": policy_rules.positive_ns(back_off.base_interval if back_off else None),
            "max": policy_rules.positive_ns(back_off.max_interval if back_off else None),
            "on": None if section.retry_on is None else tuple(
                KUMA_RETRY_ON.get(v, KUMA_GRPC_RETRY_ON.get(v, v)) for v in section.retry_on),
        }
        out.update({f"{prefix}_{k}": v for k, v in given.items() if v is not None})
    return out




_MERGE: policy_rules.Merge[MeshRetry] = policy_rules.Merge(_fields)
applying = _MERGE.applying
"""The MeshRetries (rows of the Dataplane's mesh) that apply to `dataplane` (as MeshTimeout's
rules 1, 2)."""
merged = _MERGE.merged
"""Kuma's order over the MeshRetries given, as per-field last values."""
