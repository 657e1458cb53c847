"""A projector process as one of N contenders: standby until it holds the lease, then the
usual projector (`run_projector`) on a fenced store and bus (projections.leadership).

Who leads is visible in the log (`ACTIVE` / `STANDBY` lines) and in the lease key itself
(`meta/lease/main` of `meshlog_projections`, whose value names the holder as host:pid).
"""

from __future__ import annotations

import asyncio
import os
import socket

from events import JetStreamEventLog
from events.bus.lease import FencedProjectionBus, JetStreamLease
from events.bus.projection_bus import JetStreamProjectionBus
from events.identity import SecretKey
from projections import Projector, ReadModelStore
from projections.leadership import FencedStore, Leadership
from services.runtime.up import run_projector

__all__ = ["run_standby_projector"]


async def run_standby_projector(event_log: JetStreamEventLog, store: ReadModelStore,
                                bus: JetStreamProjectionBus, *, zone: str,
                                secret_key: SecretKey | None, reconnected: asyncio.Event,
                                lease_ttl_s: float, name: str = "main") -> None:
    lease = await JetStreamLease.open(bus, name=name, holder=f"{socket.gethostname()}:"
                                      f"{os.getpid()}", ttl_s=lease_ttl_s)
    fenced_bus = FencedProjectionBus(bus, lease)

    async def fold(fenced: FencedStore) -> None:
        await run_projector(Projector(event_log, fenced, fenced_bus, zone=zone, name=name,
                                      secret_key=secret_key), reconnected)

    await Leadership(lease, store, name=name).run(fold)
