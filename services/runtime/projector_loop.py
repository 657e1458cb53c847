"""Running a projector for as long as the process runs: a halt (sequence gap, quarantined
event) keeps the rest of the process serving; a quarantined event's halt ends when an
operator skips it (`meshlog quarantine skip`); anything else is retried from the checkpoint,
with a growing delay, for ever; a NATS reconnection restarts its reader.

`meshlog up`, `meshlog projector` and each contender of a lease (services.runtime.standby)
run their projector through `run_projector`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from events import PermanentError, TransientError
from projections import Projector, ProjectorHalted, SequenceGap, StoreError, StoreUnavailable

__all__ = ["run_projector"]

log = logging.getLogger("meshlog.up")

_RESTART_MAX_S = 5.0
"""The longest wait between two starts of an interrupted projector: once NATS (or the
database) is back, projection resumes within this."""


async def run_projector(projector: Projector, reconnected: asyncio.Event | None = None
                        ) -> None:
    """Run the projector; if it halts (gap, quarantined event), keep the rest serving.

    The API and gateways go on answering from the last consistent read models; the halt is
    logged, visible at GET /_quarantine and /metrics, and survives restarts until fixed: by a
    release that reads the event, or, for a quarantined event, by an operator's decision to
    skip it, which the halted projector polls for (`Projector.skip_decided`) and then runs
    again, folding the event as nothing. A sequence gap stays halted until the process stops.
    Anything else that stops it (NATS or the database unavailable; nats-py's own errors, such
    as "no responders" for a reader whose consumer went with a restarted nats-server) is
    retried, with a growing delay, for ever: resuming from the checkpoint and reconciling the
    bus is always safe, and the fold's own errors are halts, never retried. `reconnected`
    (set on each NATS reconnection) also restarts it: its reader's consumer may be gone with
    the server, which the reader itself notices only at its next idle fetch.
    """
    delay = 0.5
    while True:
        started_at = projector.position
        try:
            if await _unless_set(projector.run(), reconnected):
                log.info("NATS is back: projector resuming after sequence %d with a new reader",
                         projector.position)
                delay = 0.5
        except SequenceGap as exc:
            log.error("PROJECTOR HALTED: %s", exc)
            await asyncio.Event().wait()  # stay halted until the process stops
        except ProjectorHalted as exc:
            log.error("PROJECTOR HALTED: %s", exc)
            await projector.skip_decided()
            log.info("projector resuming after sequence %d: the event in its way is skipped "
                     "by an operator's decision", projector.position)
            delay = 0.5
        except Exception as exc:
            if _permanent(exc):
                raise  # the same again would fail again (e.g. StoreCorrupt)
            log.warning("projector interrupted (%r); restarting in %.1f s", exc, delay,
                        exc_info=not isinstance(exc, TransientError | StoreUnavailable))
            if projector.position > started_at:
                delay = 0.5  # it had been working: a new interruption, not the same one
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RESTART_MAX_S)


def _permanent(exc: Exception) -> bool:
    """Known to fail again the same way: the store is not what this code wrote, the stream
    breaks an invariant. Anything else, nats-py's untranslated errors included, may pass."""
    return (isinstance(exc, PermanentError)
            or (isinstance(exc, StoreError) and not isinstance(exc, StoreUnavailable)))


async def _unless_set(work: Coroutine[Any, Any, None], event: asyncio.Event | None) -> bool:
    """Run `work` to its end (its exception raised), unless `event` is set first: then cancel
    it and return True."""
    if event is None:
        await work
        return False
    event.clear()
    task = asyncio.ensure_future(work)
    setting = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([task, setting], return_when=asyncio.FIRST_COMPLETED)
    finally:
        setting.cancel()
        task.cancel()
        await asyncio.wait([task, setting])  # both ended; neither's CancelledError is ours
    if task.cancelled():
        return True
    task.result()
    return False
