"""The projector's clock: appends `ClockTicked(at=due)` when a pending expiry falls due.

The fold never reads the wall clock (invariant 4). A generated MeshService waiting out its
grace period goes when the fold meets an event whose `at` is past its expiry; when the log is
quiet, nothing would come, so the live projector appends one through the command path
(`events.commands.ClockCommands.tick`): `ClockTicked` with `at` = the due time itself, once
per due time, however many projectors tick for it.

The wall clock decides only *when* to append; what the fold does with the tick depends on the
log alone, so a replay reproduces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from events import Conflict, EventLog, TransientError, now_ms
from events.commands import ClockCommands

__all__ = ["Ticker"]

log = logging.getLogger("meshlog.projector")


class Ticker:
    def __init__(self, event_log: EventLog, *, zone: str, position: Callable[[], int],
                 clock: Callable[[], int] = now_ms) -> None:
        self._log = event_log
        self._clock_commands = ClockCommands(event_log, zone=zone)
        self._position = position
        self._clock = clock
        self._due: int | None = None
        self._ticked: int | None = None
        self._changed = asyncio.Event()

    def schedule(self, due: int | None) -> None:
        """The earliest pending expiry of the state just committed (None: nothing waits)."""
        if due != self._due:
            self._due = due
            self._changed.set()

    async def run(self) -> None:
        """Append a tick whenever the scheduled due time is reached, until cancelled."""
        while True:
            self._changed.clear()
            due = self._due
            if due is None or due == self._ticked:
                await self._changed.wait()
                continue
            wait_s = (due - self._clock()) / 1000
            if wait_s > 0:
                await self._wait_changed(wait_s)
                continue
            if await self._tick(due):
                self._ticked = due
            else:
                await self._wait_changed(1.0)  # retry, sooner if the state moves

    async def _wait_changed(self, timeout_s: float) -> None:
        # asyncio.timeout, not wait_for: a 3.11 wait_for turns a cancel that lands as the
        # event fires into a return (or a TimeoutError), and the projector's stop then waits
        # for this loop forever
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()

    async def _tick(self, due: int) -> bool:
        try:
            if await self._log.last_seq() > self._position():
                # still catching up: a later event of the log may expire it anyway; the next
                # commit schedules again
                return False
            await self._clock_commands.tick(due)
        except Conflict:
            pass  # another projector ticked for this due time
        except TransientError as exc:
            log.warning("clock tick for %d not appended (%s); retrying", due, exc)
            return False
        except Exception:  # a bug here must not stop projection; it is loud and retried
            log.exception("clock tick for %d failed; retrying", due)
            return False
        return True
