"""Rebuild read models from the log into a fresh store (replay), with progress.

The same Projector does the work as in live operation, so a rebuild is byte-identical to the
live read models at the same sequence (invariant 4). `to_seq` stops at an earlier sequence:
the state as of that point, for inspection (time travel).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from msgspec import Struct

from events import EventLog
from events.identity import SecretKey
from projections.errors import StoreError
from projections.store import ReadModelStore
from projections.worker import ProjectionPublisher, Projector

__all__ = ["REBUILD_BATCH", "Progress", "rebuild"]

REBUILD_BATCH = 100_000
"""Events folded per read-model transaction in a rebuild. The derive and the commit run once
per batch, whatever its size, and a readiness change a later event of its batch replaces is
folded as its time only (`projections.readiness`), so bigger batches cost less per event
(10,000 to 50,000: a fifth less time; 50,000 to 100,000: ~6 %; 200,000: no clear gain for
half as much memory again; docs/benchmarks.md). In memory: the batch's records (~45 MB at the
benchmark's ~255-byte events) and what the reader has asked for ahead, bounded in bytes
(`events.bus._pull`); a 1M-event rebuild peaked at ~240 MB RSS, the benchmark's seeding
included."""


class Progress(Struct, frozen=True):
    position: int
    target: int
    events_per_s: float
    eta_s: float | None
    folded_as_time: int = 0
    """Readiness changes folded as their time only so far (`projections.readiness`)."""


async def rebuild(
    log: EventLog, store: ReadModelStore, *, zone: str, to_seq: int | None = None,
    publisher: ProjectionPublisher | None = None, max_batch: int = REBUILD_BATCH,
    on_progress: Callable[[Progress], None] | None = None, interval_s: float = 0.25,
    secret_key: SecretKey | None = None,
) -> int:
    """Fold sequences 1..target into an empty `store`; return the target sequence.

    `zone` is the zone of the projector doing it, which a replay never uses (it appends no
    clock tick): every event folds with the zone and origin of its own subject, so any zone's
    replay of a log gives the same read models."""
    if await store.checkpoint() != 0 or await store.rows():
        raise StoreError("the target store is not empty: replay builds into a fresh store "
                         "(drop it or pick another database)")
    head = await log.last_seq()
    target = head if to_seq is None else min(to_seq, head)
    if target == 0:
        return 0
    # its metrics go nowhere: a rebuild may run beside the live projector of the same name
    # (meshlog up rebuilding outdated read models), whose lag and position they would blur
    projector = Projector(log, store, publisher, zone=zone, max_batch=max_batch,
                          secret_key=secret_key, export_metrics=False)
    started = time.monotonic()

    def report() -> None:
        if on_progress is None:
            return
        elapsed = max(time.monotonic() - started, 1e-9)
        rate = projector.position / elapsed
        left = target - projector.position
        on_progress(Progress(projector.position, target, rate,
                             left / rate if rate > 0 else None, projector.folded_as_time))

    task = asyncio.create_task(projector.run(until_seq=target), name="rebuild")
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=interval_s)
            report()
        await task
    finally:
        if not task.done():
            # cancelled: the projector ends its commit first (projections.worker); a caller
            # that closes the store once this returns must find it done
            task.cancel()
            await asyncio.wait({task})
    return target
