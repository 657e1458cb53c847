"""Who may call an inbound with mTLS on: Envoy's network RBAC filter.

With mTLS on and no MeshTrafficPermission (a kind meshlog does not have yet), nothing is
allowed (Kuma >= 2.6): an ALLOW rule set without policies denies every connection."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from envoy.config.rbac.v3.rbac_pb2 import RBAC as Rules
from envoy.extensions.filters.network.rbac.v3.rbac_pb2 import RBAC

from events import Dataplane, Inbound

__all__ = ["inbound_rbac"]


def inbound_rbac(mesh: str, dataplane: Dataplane, inbound: Inbound, meshservices: Collection[str],
                 policies: Iterable[object], stat_prefix: str) -> RBAC:
    return RBAC(stat_prefix=stat_prefix, rules=Rules(action=Rules.ALLOW))
