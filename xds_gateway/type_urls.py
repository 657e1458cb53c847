"""xDS type URLs, in one place, and the order resources are pushed in (xds-rules.md #10)."""

from __future__ import annotations

__all__ = ["CLUSTER", "ENDPOINT", "HEALTH_CHECK_SPECIFIER", "LISTENER", "PUSH_ORDER", "ROUTE",
           "SECRET", "WILDCARD_TYPES"]

_PREFIX = "type.googleapis.com/envoy."
LISTENER = _PREFIX + "config.listener.v3.Listener"
CLUSTER = _PREFIX + "config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "config.endpoint.v3.ClusterLoadAssignment"
ROUTE = _PREFIX + "config.route.v3.RouteConfiguration"
SECRET = _PREFIX + "extensions.transport_sockets.tls.v3.Secret"
HEALTH_CHECK_SPECIFIER = _PREFIX + "service.health.v3.HealthCheckSpecifier"
"""What HDS sends (no version, no nonce): named for the stream callbacks."""

PUSH_ORDER = (SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE)
"""SDS -> CDS -> EDS -> LDS -> RDS: a listener or route never references a cluster not yet
sent, and a rotated secret goes out before what changed with it (make before break)."""

WILDCARD_TYPES = frozenset({LISTENER, CLUSTER})
"""Envoy subscribes to these without names (or `*`); EDS, RDS and SDS are always named."""
