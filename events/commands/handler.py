"""`CommandHandler`: the one path from a decision to the log (DESIGN.md, Seams).

Every writer of the log (the API, a gateway's self-registration, reaper and health reports,
the projector's clock) goes through `execute`:

1. read the subject's last record, decoded once into `Current`: a consistent read
   (`EventLog.last`), so it holds every write acknowledged before it (on a replicated stream
   the leader answers: a follower a moment behind would give a sequence the append is then
   refused for, a spurious Conflict, or a stale record a decision takes for current, a write
   answered "unchanged" that did not happen);
2. `decide(current)`: a pure function of it returns `Append(event)` or `Keep()`, or raises a
   `PermanentError` (NotFound, Conflict, InvalidResource) that says why not;
3. append with `Nats-Expected-Last-Subject-Sequence` = the sequence decided on (invariant 2:
   a concurrent writer makes this a Conflict, never a silent overwrite) and a `Nats-Msg-Id`
   derived from (subject, that sequence, the decision's content), so a retried decision is
   appended once, and two gateways taking the same decision append one event; a Dataplane
   registered again with only its readiness changed says so (`Meshlog-Readiness-Of`,
   events.readiness).

A caller that may race others on the subject (gateways) asks for `retries`: on a conflict the
subject is read and the decision taken again. The API does not retry: its caller decided on a
version (`If-Match`) and gets the 409.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec
from msgspec import Struct

from events.codec import decode_event, encode_event
from events.errors import Conflict, IdempotencyKeyReused, UndecodableEvent
from events.event_types import AnyEvent
from events.log import EventLog, Record, decision_msg_id
from events.readiness import READINESS_HEADER, readiness_change

__all__ = ["Append", "CommandHandler", "Current", "Decide", "Decision", "Keep", "Outcome",
           "current_of", "timeless"]


class Current(Struct, frozen=True):
    """A subject's last record, as a decision sees it."""

    seq: int = 0
    """The subject's last sequence; 0: it has no event."""
    event: AnyEvent | None = None
    """The last event; None when there is none or this code cannot decode it (the projector
    quarantines such an event; a decision treats it as absent)."""


class Append(Struct, frozen=True):
    """Append `event`, expecting the subject at the sequence the decision was taken on."""

    event: AnyEvent
    content: bytes | None = None
    """What the decision's Msg-Id derives from; None: the event without its time, so the same
    decision taken again a moment later is the same Msg-Id."""


class Keep(Struct, frozen=True):
    """Append nothing: the log already says what the command asks for."""


Decision = Append | Keep
Decide = Callable[[Current], Decision]


class Outcome(Struct, frozen=True):
    seq: int
    """The subject's last sequence after the command: the appended event's, or the one kept."""
    appended: bool
    previous: Current
    """What the decision was taken on."""
    duplicate: bool = False
    """The log already held this decision's Msg-Id (a retry): nothing new was written."""


def current_of(record: Record | None) -> Current:
    if record is None:
        return Current()
    try:
        event = decode_event(record.data, seq=record.seq, subject=record.subject,
                             schema_version=record.schema_version)
    except UndecodableEvent:
        event = None
    return Current(seq=record.seq, event=event)


def timeless(event: AnyEvent) -> bytes:
    """The event without its time: the content a decision's Msg-Id is derived from."""
    return encode_event(msgspec.structs.replace(event, at=0))


class CommandHandler:
    def __init__(self, log: EventLog) -> None:
        self.log = log

    @classmethod
    def of(cls, log: EventLog | CommandHandler) -> CommandHandler:
        """The handler of `log` (commands of several kinds may share one)."""
        return log if isinstance(log, CommandHandler) else cls(log)

    async def current(self, subject: str) -> Current:
        """The subject's last record as of now: every write acknowledged before the call is
        in it (step 1 above)."""
        return current_of(await self.log.last(subject, consistent=True))

    async def execute(self, subject: str, decide: Decide, *, key: str | None = None,
                      retries: int = 0, headers: Mapping[str, str] | None = None) -> Outcome:
        """Read, decide, append. `key`: the caller's idempotency key, which replaces the
        decision's own Msg-Id (in a namespace of its own: a key can never match another
        writer's Msg-Id) and is refused if it comes back with other content. Raises what
        `decide` raises, `Conflict` when the subject moved on more than `retries` times,
        `EventLogUnavailable` when the log cannot be reached."""
        attempt = 0
        while True:
            current = await self.current(subject)
            decision = decide(current)
            if isinstance(decision, Keep):
                return Outcome(seq=current.seq, appended=False, previous=current)
            if key is not None:
                # the writer's zone in it: a zone's Msg-Ids reach global's and other zones'
                # streams through sources, whose duplicate window must not take two zones'
                # equal keys for one message (reference/multizone.md §4)
                msg_id = f"key:{subject.split('.')[2]}:{key}"
            else:
                msg_id = decision_msg_id(subject, current.seq, decision.content
                                         if decision.content is not None
                                         else timeless(decision.event))
            said = headers
            if readiness_change(current.event, decision.event):
                # a readiness change of the event decided on: what a projector need not
                # decode when a later event replaces it (events.readiness)
                said = {**(headers or {}), READINESS_HEADER: str(current.seq)}
            try:
                appended = await self.log.append(
                    subject, decision.event, expected_last_subject_seq=current.seq,
                    msg_id=msg_id, headers=said)
            except Conflict:
                if attempt == retries:
                    raise
                attempt += 1
                continue  # a concurrent write: read again and decide again
            if appended.duplicate and key is not None:
                await self._check_reuse(key, subject, appended.seq, timeless(decision.event))
            return Outcome(seq=appended.seq, appended=True, previous=current,
                           duplicate=appended.duplicate)

    async def _check_reuse(self, key: str, subject: str, seq: int, content: bytes) -> None:
        """The log dropped an append with the caller's key as a duplicate (JetStream's
        de-duplication window): a retry of the same request, or the key given again for
        another write, which must be refused, never acknowledged (Stripe's rule)."""
        record = await self.log.at(seq)
        event = current_of(record).event if record is not None else None
        if record is None or record.subject != subject or event is None or timeless(
                event) != content:
            raise IdempotencyKeyReused(key, seq, record.subject if record else subject)
