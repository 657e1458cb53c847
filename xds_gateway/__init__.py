"""Envoy: read models to Envoy resources, and the ADS server."""

from xds_gateway.gateway import Gateway
from xds_gateway.resources.cache import EncodedResource, ResourceCache
from xds_gateway.resources.snapshot import Snapshot, build_snapshot
from xds_gateway.view import ProjectionView

__all__ = [
    "EncodedResource",
    "Gateway",
    "ProjectionView",
    "ResourceCache",
    "Snapshot",
    "build_snapshot",
]
