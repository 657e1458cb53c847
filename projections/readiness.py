"""Readiness changes a later event of the same batch replaces, folded without decoding them.

A readiness change (`events.readiness`: the Dataplane of its subject's previous event, only
its inbounds' `health` changed) does to the projection what registering that Dataplane again
does, but for the readiness on the Dataplane's row: the same stale marks, the same clock, the
same (unchanged) generated MeshServices, a row of the same version and times. When a later
event of the same subject is in the batch, that row is replaced before anything reads the
readiness (endpoints and status are derived once per batch, from the rows at its end), so the
change is folded from the row the state holds (`fold.fold_registered_again`), reading of the
event only its time and names. Nearly half of a busy log is such flips; decoding them was
most of a rebuild's time (docs/benchmarks.md, Rebuild).

Exact by construction, checked at each event: it is folded so only when

- the record is of this log's own zone (other zones' and global's go their own ways),
- of the current schema version, and its time and names decode,
- the state's row of its Dataplane was written by the very event it is a readiness change of
  (the row's version is the header's sequence: nothing else wrote the row in between, and
  the row holds that event's Dataplane, labelled, as a readiness change differs from it in
  readiness only);

otherwise it is decoded and folded in full, as every other event. And the batch checks that
what it counted on happened: a row that no later event replaced after all (the event that was
to replace it could not be read and the projector stops in front of it, or an operator skipped
it, or a writer past the API put another kind of event on the subject) gets the readiness its
event carries, decoded then (`BatchReadiness.settle`), before the batch is derived or
committed. Batch sizes never change the rows (invariant 4): `tests/projections/test_fold.py`
folds random histories at random batch sizes and restarts through this path, against one
event per batch, and `tests/projections/test_readiness.py` each way it may not apply.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Literal

import msgspec

from events import (
    DataplaneRegistered,
    MalformedSubject,
    UndecodableEvent,
    decode_event,
    provenance_of,
)
from events.codec import SCHEMA_VERSION
from events.log import Record
from projections.fold import fold_registered_again, put_readiness
from projections.state import ProjectionState, dp_key

__all__ = ["BatchReadiness", "UnreadableReadiness"]


class _Named(msgspec.Struct):
    mesh: str
    name: str


class _Stamp(msgspec.Struct):
    """What a replaced readiness change is read for: its time and its Dataplane's names."""

    event: Literal["dataplane.registered"]
    at: int
    dataplane: _Named


_stamp = msgspec.json.Decoder(_Stamp)


class UnreadableReadiness(Exception):
    """A readiness change folded from its Dataplane's row had to be read after all (nothing
    replaced it), and cannot be: the projector stops in front of it, as for any event."""

    def __init__(self, record: Record, reason: str) -> None:
        super().__init__(reason)
        self.record = record
        self.reason = reason


class BatchReadiness:
    """The readiness changes of one batch that a later event of their subject replaces, and
    those of them folded from rows (`fold`), until `settle` checks they were replaced."""

    def __init__(self, batch: Sequence[Record], skipped: Container[int] = ()) -> None:
        self.replaced: frozenset[int] = frozenset()
        """Sequences of the readiness changes a later event of their subject replaces (an
        event an operator decided to skip replaces nothing)."""
        self._folded: dict[str, tuple[str, Record]] = {}
        """Subject -> (row key, record) of the last change folded from its row."""
        if not any(record.readiness_of for record in batch):
            return
        last = {record.subject: record.seq for record in batch if record.seq not in skipped}
        self.replaced = frozenset(record.seq for record in batch if record.readiness_of
                                  and last.get(record.subject, record.seq) > record.seq)

    def fold(self, state: ProjectionState, record: Record) -> bool:
        """Fold `record` from the state's row of its Dataplane if it is a replaced readiness
        change and that is exact; False (nothing done): fold it in full."""
        if record.seq not in self.replaced or record.schema_version != SCHEMA_VERSION:
            return False
        try:
            if provenance_of(record.subject) != state.local_provenance:
                return False
            stamp = _stamp.decode(record.data)
        except (MalformedSubject, msgspec.DecodeError):
            return False  # the full path says what is wrong with it
        key = dp_key(stamp.dataplane.mesh, stamp.dataplane.name)
        row = state.dataplane_at(key)
        if row is None or row.meta.version != record.readiness_of:
            return False
        fold_registered_again(state, record.seq, stamp.at, row)
        self._folded[record.subject] = (key, record)
        return True

    def settle(self, state: ProjectionState, subject: str | None = None) -> None:
        """Give each row folded from (of `subject`, or all) that no later event replaced the
        readiness its change carries; raise `UnreadableReadiness` if that change cannot be
        read. Before the state is derived or committed, and before the projector stops in
        front of an event of such a subject."""
        subjects = list(self._folded) if subject is None else [subject]
        for name in subjects:
            folded = self._folded.pop(name, None)
            if folded is None:
                continue
            key, record = folded
            row = state.dataplane_at(key)
            if row is None or row.meta.version != record.seq:
                continue  # replaced, as it was to be
            try:
                event = decode_event(record.data, seq=record.seq, subject=record.subject)
            except UndecodableEvent as exc:
                raise UnreadableReadiness(record, exc.reason) from exc
            if type(event) is not DataplaneRegistered:
                raise UnreadableReadiness(record, "it says it is a readiness change, and "
                                          f"is {type(event).__name__}")
            put_readiness(state, event, provenance_of(record.subject))
