"""The clock command: `ClockTicked(at=due)` when a pending expiry falls due and the log is quiet.

Each due time has its own subject (`clock_subject(due)`), written once: the tick expects the
subject empty, and the decision's Msg-Id (subject, sequence 0, content) is the same for every
projector, so two projectors ticking for the same due time append one event (the second gets
a duplicate inside the dedupe window, or finds the tick).
"""

from __future__ import annotations

from events.commands.handler import Append, CommandHandler, Current, Decision, Keep
from events.event_types import ClockTicked
from events.log import EventLog
from events.subjects import clock_subject

__all__ = ["ClockCommands"]


class ClockCommands:
    def __init__(self, log: EventLog | CommandHandler, *, zone: str) -> None:
        self.handler = CommandHandler.of(log)
        self._zone = zone

    async def tick(self, due: int) -> bool:
        """Append the tick for `due` unless the log has it; True when this call appended it."""

        def decide(current: Current) -> Decision:
            return Keep() if current.seq else Append(ClockTicked(at=due))

        outcome = await self.handler.execute(clock_subject(due, self._zone), decide)
        return outcome.appended and not outcome.duplicate
