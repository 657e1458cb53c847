"""What a subject's last event leaves: the resource, or nothing."""

from __future__ import annotations

from events.event_types import (
    AnyEvent,
    DataplaneRegistered,
    HostnameGeneratorApplied,
    MeshApplied,
    MeshMultiZoneServiceApplied,
    MeshServiceApplied,
    PolicyApplied,
    ZoneIngressRegistered,
)
from events.resources import Resource

__all__ = ["live_resource"]


def live_resource(event: AnyEvent | None) -> Resource | None:
    """The resource a subject's last event leaves, None if it never existed or was deleted."""
    match event:
        case MeshApplied(mesh=r) | DataplaneRegistered(dataplane=r) | MeshServiceApplied(
            meshservice=r
        ) | HostnameGeneratorApplied(hostname_generator=r) | MeshMultiZoneServiceApplied(
            meshmultizoneservice=r
        ) | ZoneIngressRegistered(zoneingress=r) | PolicyApplied(policy=r):
            return r
        case _:
            return None
