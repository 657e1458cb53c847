"""The skip command: an operator's decision to fold one event of this log as nothing.

The escape hatch for an event no release can read (garbage appended by a writer with admin
NATS credentials, or by a bug): the stream denies deletes (invariant 3), so the event stays
where it is and the decision is appended beside it, as `SequenceSkipped` on the sequence's own
subject (`skip_subject(seq)`), once (expected sequence 0): asking again appends nothing. It
records who decided, when and why; the projector honours it only for an event it cannot fold
(projections.worker).

Refused (`Conflict`) for an event that is not quarantined and that this code decodes: it
folds, so a skip would only drop it from the read models. `NotFound` for a sequence the log
does not hold.
"""

from __future__ import annotations

from msgspec import Struct

from events.codec import decode_event
from events.commands.handler import Append, CommandHandler, Current, Decision, Keep
from events.errors import Conflict, NotFound, UndecodableEvent
from events.event_types import SequenceSkipped
from events.log import EventLog, Record
from events.subjects import MalformedSubject, provenance_of, skip_subject

__all__ = ["SkipCommands", "Skipped", "unfoldable"]


class Skipped(Struct, frozen=True):
    seq: int
    """The skipped event's sequence."""
    subject: str
    """The skipped event's subject."""
    decision_seq: int
    """The decision's own sequence (this call's, or the one made before)."""
    appended: bool


def unfoldable(record: Record) -> str | None:
    """Why this code cannot fold `record` (it cannot decode it, or its subject names no
    writer), or None if it can decode it."""
    try:
        decode_event(record.data, seq=record.seq, subject=record.subject,
                     schema_version=record.schema_version)
        provenance_of(record.subject)
    except UndecodableEvent as exc:
        return exc.reason
    except MalformedSubject as exc:
        return str(exc)
    return None


class SkipCommands:
    def __init__(self, log: EventLog | CommandHandler, *, zone: str) -> None:
        self.handler = CommandHandler.of(log)
        self._zone = zone

    async def skip(self, seq: int, *, reason: str, by: str, at: int,
                   quarantined: bool) -> Skipped:
        """Decide that the event at `seq` folds as nothing. `quarantined`: a projector of this
        log quarantined it (the caller read that in its read models); otherwise the event must
        be one this code cannot decode. Raises `NotFound`, `Conflict` (module docstring)."""
        record = await self.handler.log.at(seq)
        subject = skip_subject(seq, self._zone)
        if record is None:
            raise NotFound(f"sequence {seq}: the log holds no event there")
        if not quarantined and unfoldable(record) is None:
            raise Conflict(subject, 0, f"sequence {seq} ({record.subject}) is not quarantined "
                                       "and decodes, so it folds: only an event the projector "
                                       "cannot fold may be skipped")
        event = SequenceSkipped(at=at, seq=seq, subject=record.subject, reason=reason, by=by)

        def decide(current: Current) -> Decision:
            return Keep() if current.seq else Append(event)

        outcome = await self.handler.execute(subject, decide)
        return Skipped(seq=seq, subject=record.subject, decision_seq=outcome.seq,
                       appended=outcome.appended and not outcome.duplicate)
