"""Resources for proxyless gRPC clients (xds-rules.md #13).

A grpcio channel to `xds:///<target>` asks, in order, for the Listener named `<target>`, the
RouteConfiguration that listener's HttpConnectionManager names, the Cluster the route points
at and that cluster's ClusterLoadAssignment. Targets (see `names.grpc_targets`):
`<meshservice>:<port>` or `<hostname>:<port>`, e.g. `xds:///backend.svc.mesh.local:8080`,
for each MeshService port the client may reach (its Dataplane is `<mesh>.<name>` in the node
id, as for Envoy). The cluster is the MeshService port's EDS cluster that Envoy gets too; its
ClusterLoadAssignment has a locality with a weight (gRPC NACKs one without a locality and
ignores a locality without a weight).

Envoy ignores api_listeners, so `snapshot.py` adds these only for gRPC nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3.config_source_pb2 import (
    AggregatedConfigSource,
    ApiVersion,
    ConfigSource,
)
from envoy.config.listener.v3.api_listener_pb2 import ApiListener
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_components_pb2 import (
    Route,
    RouteAction,
    RouteMatch,
    VirtualHost,
)
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.filters.http.router.v3.router_pb2 import Router
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (  # noqa: E501
    HttpConnectionManager,
    HttpFilter,
    Rds,
)
from google.protobuf.any_pb2 import Any

__all__ = ["api_listener", "route_configuration"]

_ADS = ConfigSource(ads=AggregatedConfigSource(), resource_api_version=ApiVersion.V3)


def api_listener(target: str) -> Listener:
    """Listener `target`: an HttpConnectionManager taking route `target` over ADS (RDS)."""
    router = Any()
    router.Pack(Router())
    hcm = Any()
    hcm.Pack(HttpConnectionManager(
        stat_prefix=target,
        rds=Rds(config_source=_ADS, route_config_name=target),
        # gRPC needs at least one http filter, the router last (xds-rules.md #13)
        http_filters=[HttpFilter(name="envoy.filters.http.router", typed_config=router)],
    ))
    return Listener(name=target, api_listener=ApiListener(api_listener=hcm))


def route_configuration(target: str, cluster: str, routes: Sequence[Route] | None = None
                        ) -> RouteConfiguration:
    """Route `target`: one virtual host whose domain is the target, everything to `cluster`,
    or `routes` (a MeshHTTPRoute's, `proxyless_routes.grpc_routes`)."""
    return RouteConfiguration(name=target, virtual_hosts=[VirtualHost(
        name=target,
        domains=[target],
        routes=routes if routes is not None else [
            Route(match=RouteMatch(prefix=""), route=RouteAction(cluster=cluster))],
    )])
