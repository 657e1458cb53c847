"""MeshRetry (Kuma 2.x, `pkg/plugins/policies/meshretry`): how the selected proxies retry
connections (L4) and requests (HTTP, gRPC) to their outbounds.

Not modelled, and refused as unknown fields (the decoder's shape check), so a policy that
relies on one (to retry GETs only, say) is never applied without it:
`http.retriableResponseHeaders`, `http.retriableRequestHeaders`, `http.rateLimitedBackOff`,
`http.hostSelection`, `http.hostSelectionRetryMaxAttempts` and `grpc.rateLimitedBackOff`
(docs/status.md). `retryOn`
takes Kuma's values in its API's spelling (`5xx`, `GatewayError`, ...; `All5xx`, the name of
Kuma's constant for `5xx`, too) and in Envoy's (`gateway-error`, ...); Kuma's `HttpMethod*`
values are refused."""

from __future__ import annotations

from events.resources._base import MeshScopedResource, _Base
from events.resources._policies import TargetRef

__all__ = [
    "GRPC_RETRY_ON",
    "HTTP_RETRY_ON",
    "KUMA_GRPC_RETRY_ON",
    "KUMA_RETRY_ON",
    "MeshRetry",
    "MeshRetryBackOff",
    "MeshRetryConf",
    "MeshRetryGrpc",
    "MeshRetryHttp",
    "MeshRetrySpec",
    "MeshRetryTcp",
    "MeshRetryTo",
]

HTTP_RETRY_ON = ("5xx", "gateway-error", "reset", "retriable-4xx", "connect-failure",
                 "envoy-ratelimited", "refused-stream", "retriable-status-codes",
                 "retriable-headers", "http3-post-connect-failure")
"""Kuma's `http.retryOn` values that are Envoy's `retry_on` conditions as they are; an HTTP
status code (`"503"`) is one too (`retriable_status_codes`)."""
GRPC_RETRY_ON = ("cancelled", "deadline-exceeded", "internal", "resource-exhausted",
                 "unavailable")
"""Kuma's `grpc.retryOn` values: Envoy's gRPC `retry_on` conditions."""
KUMA_RETRY_ON = {"All5xx": "5xx", "GatewayError": "gateway-error", "Reset": "reset",
                 "Retriable4xx": "retriable-4xx", "ConnectFailure": "connect-failure",
                 "EnvoyRatelimited": "envoy-ratelimited", "RefusedStream": "refused-stream",
                 "Http3PostConnectFailure": "http3-post-connect-failure"}
"""Kuma's own spelling of the HTTP values (its API's enum, `GatewayError`; `All5xx` is its
constant's name, whose value is `5xx`), accepted too: the Envoy condition each stands for."""
KUMA_GRPC_RETRY_ON = {"Canceled": "cancelled", "DeadlineExceeded": "deadline-exceeded",
                      "Internal": "internal", "ResourceExhausted": "resource-exhausted",
                      "Unavailable": "unavailable"}
"""The same for gRPC's values."""


class MeshRetryTcp(_Base, frozen=True):
    max_connect_attempt: int | None = None
    """How many times tcp_proxy tries to connect to an endpoint (`max_connect_attempts`)."""


class MeshRetryBackOff(_Base, frozen=True):
    base_interval: str | None = None
    """Go duration; Envoy's default 25 ms."""
    max_interval: str | None = None
    """Go duration; Envoy's default 10 times `baseInterval`."""


class MeshRetryHttp(_Base, frozen=True):
    num_retries: int | None = None
    per_try_timeout: str | None = None
    back_off: MeshRetryBackOff | None = None
    retry_on: list[str] | None = None
    """`HTTP_RETRY_ON` values and HTTP status codes as strings."""


class MeshRetryGrpc(_Base, frozen=True):
    num_retries: int | None = None
    per_try_timeout: str | None = None
    back_off: MeshRetryBackOff | None = None
    retry_on: list[str] | None = None
    """`GRPC_RETRY_ON` values."""


class MeshRetryConf(_Base, frozen=True):
    tcp: MeshRetryTcp | None = None
    http: MeshRetryHttp | None = None
    grpc: MeshRetryGrpc | None = None


class MeshRetryTo(_Base, frozen=True):
    target_ref: TargetRef
    """The destinations this entry is about: Mesh (all) or MeshService `name`."""
    default: MeshRetryConf


class MeshRetrySpec(_Base, frozen=True, kw_only=True):
    target_ref: TargetRef = TargetRef(kind="Mesh")
    """The proxies whose outbounds it sets: Mesh (default), MeshSubset, MeshService or
    Dataplane."""
    to: list[MeshRetryTo] = []


class MeshRetry(MeshScopedResource, frozen=True, kw_only=True, tag="MeshRetry"):
    """Retries of the selected proxies' outbounds to MeshService ports. Semantics (which
    policies apply, how `to[]` entries merge, what each field sets in Envoy):
    `xds_gateway.resources.retries`."""

    spec: MeshRetrySpec
