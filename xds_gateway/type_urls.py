"""xDS type URLs, in one place, and the order resources are pushed in (xds-rules.md #10)."""

from __future__ import annotations

__all__ = ["CLUSTER", "ENDPOINT", "HEALTH_CHECK_SPECIFIER", "LISTENER", "PUSH_ORDER", "ROUTE",
           "WILDCARD_TYPES"]

_PREFIX = "type.googleapis.com/envoy."
LISTENER = _PREFIX + "config.listener.v3.Listener"
CLUSTER = _PREFIX + "config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "config.endpoint.v3.ClusterLoadAssignment"
ROUTE = _PREFIX + "config.route.v3.RouteConfiguration"
HEALTH_CHECK_SPECIFIER = _PREFIX + "service.health.v3.HealthCheckSpecifier"
"""What HDS sends (no version, no nonce): named for the stream callbacks."""

PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
"""CDS -> EDS -> LDS -> RDS: a listener or route never references a cluster not yet sent."""

WILDCARD_TYPES = frozenset({LISTENER, CLUSTER})
"""Envoy subscribes to these without names (or `*`); EDS and RDS are always named."""
