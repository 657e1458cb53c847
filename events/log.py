"""The `EventLog` role: what the command side and the projectors need from the log."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from msgspec import Struct

from events.event_types import AnyEvent

__all__ = ["Appended", "EventLog", "PendingAppend", "Record", "decision_msg_id"]


def decision_msg_id(subject: str, expected: int, content: bytes) -> str:
    """The `msg_id` of one decision about `subject`, taken at its sequence `expected` with
    `content`: a retry of the same decision appends once (invariant 2)."""
    digest = hashlib.sha256(f"{subject}\n{expected}\n".encode() + content).hexdigest()
    return digest[:32]


class Record(Struct, frozen=True, gc=False):
    """One stored message, not yet decoded (decoding may fail; see events.codec).

    Not tracked by the cyclic garbage collector (`gc=False`): it holds strings, bytes and a
    dict of strings, which cannot lead back to it, and a reader makes one per message."""

    seq: int
    subject: str
    data: bytes
    headers: Mapping[str, str]
    schema_version: int
    readiness_of: int = 0
    """The sequence of its subject's previous event when this one is a readiness change of it
    (`events.readiness`, the `Meshlog-Readiness-Of` header); 0 when it is not, or when the
    reader that made the record did not look (a projector then folds it as any other)."""


class Appended(Struct, frozen=True):
    seq: int
    duplicate: bool
    """True when the log already held this `msg_id`: a retry, nothing was written."""


class PendingAppend(Struct, frozen=True):
    """One append of a pipelined batch (`JetStreamEventLog.append_many`)."""

    subject: str
    event: AnyEvent
    expected_last_subject_seq: int
    msg_id: str
    trace: Mapping[str, str] | None = None
    """The W3C trace context of the write, as headers (`events.bus.trace_context`), if any."""


class EventLog(Protocol):
    async def append(
        self,
        subject: str,
        event: AnyEvent,
        *,
        expected_last_subject_seq: int,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> Appended:
        """Append one event if `subject`'s last sequence is `expected_last_subject_seq`
        (0 = the subject must be empty); raise `Conflict` otherwise. A retry with the same
        `msg_id` inside the duplicate window returns the first sequence, `duplicate=True`."""
        ...

    async def last(self, subject: str, *, consistent: bool = False) -> Record | None:
        """The newest message of a subject, or None if it has none. Any replica of the log
        may answer, and one that lags may lack recent writes; with `consistent`, the answer
        holds every write acknowledged before the call (what a write decision needs: its
        expected sequence is then not stale for want of a write that was already made)."""
        ...

    async def at(self, seq: int) -> Record | None:
        """The record at sequence `seq`, or None if the log has none there."""
        ...

    async def latest(self, subject_filter: str) -> list[Record]:
        """The newest message of every subject matching `subject_filter` (NATS wildcards),
        in stream order: the current state of a set of resources, for decisions that look
        across them (a Mesh that still has Dataplanes)."""
        ...

    async def history(self, subject: str, *, after: int = 0) -> list[Record]:
        """Every record of one subject after sequence `after`, oldest first, holding every
        write acknowledged before the call (as `latest`): for a decision that needs more than
        a subject's last record (where the current life of a Mesh deleted and created again
        began)."""
        ...

    async def last_seq(self) -> int:
        """The stream's last sequence (0 for an empty log)."""
        ...

    def read(self, from_seq: int, *, max_batch: int = 1000) -> AsyncIterator[list[Record]]:
        """Batches of consecutive records from `from_seq` on, in order, forever (live tail)."""
        ...

    def follow(self, subject_filter: str, from_seq: int) -> AsyncIterator[list[Record]]:
        """Batches of the records of the subjects matching `subject_filter` (NATS wildcards)
        from `from_seq` on, in order, forever (live tail): a watch on a few subjects, for a
        process that acts when they change (the API's admin token follows its signing key)."""
        ...
