"""A projector as one of N contenders: standby until it holds the lease, then the usual
projector (`run_projector`) on a fenced store and bus (projections.leadership).

Who leads is visible in the log (`ACTIVE` / `STANDBY` lines), in the lease key itself
(`meta/lease/main` of `meshlog_projections`, whose value names the holder as host:pid), in
the metrics, and in `/ready` (`readiness`): what a load balancer or an orchestrator asks.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from typing import Any

import nats.errors

from events import JetStreamEventLog
from events.bus.lease import FencedProjectionBus, JetStreamLease
from events.bus.projection_bus import JetStreamProjectionBus
from events.identity import SecretKey
from projections import Projector, ReadModelStore
from projections.leadership import FencedStore, Leadership
from projections.worker import LIVE_BATCH
from services.runtime.projector_loop import run_projector

__all__ = ["Readiness", "StandbyProjector", "default_holder", "projectors_status",
           "single_projector_readiness"]

Readiness = tuple[int, dict[str, Any]]
"""A `/ready` answer: the HTTP status and its JSON body."""

_HOLDER_TIMEOUT_S = 2.0


def default_holder() -> str:
    """This process as a lease holder: host:pid (unique among processes)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class StandbyProjector:
    """One contender for the lease of projector `name`; folds while it holds it."""

    def __init__(self, event_log: JetStreamEventLog, store: ReadModelStore,
                 bus: JetStreamProjectionBus, *, zone: str, secret_key: SecretKey | None,
                 reconnected: asyncio.Event | None, lease_ttl_s: float, name: str = "main",
                 holder: str | None = None, max_batch: int = LIVE_BATCH) -> None:
        """`holder`: unique among the contenders (default host:pid; `meshlog up
        --projectors N` adds which of its N it is)."""
        self._log = event_log
        self._store = store
        self._bus = bus
        self._zone = zone
        self._secret_key = secret_key
        self._reconnected = reconnected
        self._max_batch = max_batch
        self.lease = JetStreamLease(bus, bus.kv, name=name, holder=holder or default_holder(),
                                    ttl_s=lease_ttl_s)
        self.leadership = Leadership(self.lease, store, name=name)
        self._name = name
        self.projector: Projector | None = None
        """The projector of the current term (None before the first)."""

    async def run(self) -> None:
        """Contend for the lease until cancelled; fold while holding it."""
        fenced_bus = FencedProjectionBus(self._bus, self.lease)

        async def fold(fenced: FencedStore) -> None:
            self.projector = projector = Projector(
                self._log, fenced, fenced_bus, zone=self._zone, name=self._name,
                secret_key=self._secret_key, max_batch=self._max_batch)
            try:
                await run_projector(projector, self._reconnected)
            finally:
                projector.metrics.stood_down()

        await self.leadership.run(fold)

    async def status(self) -> dict[str, Any]:
        """Who this contender is and what it does, as `/ready` and the API show it."""
        active = self.leadership.role == "active"
        body: dict[str, Any] = {"role": self.leadership.role, "holder": self.lease.holder}
        if active:
            body["fencingToken"] = self.leadership.token
            body["position"] = self.projector.position if self.projector else 0
            body["leader"] = self.lease.holder
            if self.projector is not None and self.projector.fold_versions is not None:
                body["foldVersion"] = self.projector.fold_versions.as_json()
        else:
            body["leader"] = await self._leader()
        return body

    async def readiness(self) -> Readiness:
        """200 while this contender holds the lease and folds (the one to send work to);
        503 as standby, naming the leader (None while no one holds the lease)."""
        body = await self.status()
        return (200 if body["role"] == "active" else 503), body

    async def _leader(self) -> str | None:
        try:
            async with asyncio.timeout(_HOLDER_TIMEOUT_S):
                return await self.lease.current_holder()
        except (nats.errors.Error, TimeoutError):
            return None  # NATS unreachable: no one known to lead


def single_projector_readiness(projector: Projector) -> Readiness:
    """`/ready` of a projector without a lease (`--lease-ttl 0`): it always folds."""
    body: dict[str, Any] = {"role": "active", "fencingToken": 0, "lease": False,
                            "position": projector.position}
    if projector.fold_versions is not None:
        body["foldVersion"] = projector.fold_versions.as_json()
    return 200, body


async def projectors_status(contenders: Sequence[StandbyProjector]) -> list[dict[str, Any]]:
    """Each contender's `status`, for `GET /_admin/projectors` of `meshlog up --projectors N`."""
    return [await contender.status() for contender in contenders]
