"""Selector matching: does an inbound (a Dataplane) carry every tag of a selector?"""

from __future__ import annotations

from events import Dataplane, Inbound

__all__ = ["dataplane_matches", "inbound_matches"]


def inbound_matches(inbound: Inbound, tags: dict[str, str]) -> bool:
    return all(inbound.tags.get(k) == v for k, v in tags.items())


def dataplane_matches(dp: Dataplane | None, tags: dict[str, str]) -> bool:
    """An empty selector selects nothing."""
    return dp is not None and bool(tags) and any(
        inbound_matches(i, tags) for i in dp.networking.inbound)
