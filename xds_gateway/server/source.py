"""`SnapshotSource`: where an ADS stream gets its proxy's config, and learns that it changed.

The seam between the xDS server and snapshot building (go-control-plane's `ConfigWatcher`):
the streams (`subscription.py`, `sotw.py`, `delta.py`) never read read models; they ask a
source for a proxy's `Snapshot` at the source's current generation, and are woken when the
generation moves. `xds_gateway.resources.ViewSnapshots` is the source built from a gateway's
projection view; a test or another kind of source (a fixed snapshot, a recorded one) fits the
same four members.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from xds_gateway.resources.node import ProxyNode
from xds_gateway.resources.snapshot import Snapshot

__all__ = ["SnapshotSource"]


class SnapshotSource(Protocol):
    @property
    def generation(self) -> int:
        """Moves whenever a snapshot may differ from one taken before."""
        ...

    def wake_on_change(self, wake: asyncio.Event) -> None:
        """Set `wake` at every change of `generation` (until `stop_waking`)."""
        ...

    def stop_waking(self, wake: asyncio.Event) -> None:
        ...

    def snapshot(self, mesh: str, name: str, node: ProxyNode,
                 previous: Snapshot | None) -> Snapshot:
        """Dataplane `<mesh>.<name>`'s config at the current generation. `previous`: the same
        proxy's snapshot of an earlier generation, which the source may reuse parts of."""
        ...
