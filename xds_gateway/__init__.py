"""Envoy: read models to Envoy resources, and the ADS server."""

from xds_gateway.cache import EncodedResource, ResourceCache
from xds_gateway.server import Gateway
from xds_gateway.snapshot import Snapshot, build_snapshot
from xds_gateway.view import ProjectionView

__all__ = [
    "EncodedResource",
    "Gateway",
    "ProjectionView",
    "ResourceCache",
    "Snapshot",
    "build_snapshot",
]
