"""Readiness changes a later event of the same batch replaces, folded without decoding them.

A readiness change (`events.readiness`: the Dataplane of its subject's previous event, only
its inbounds' `health` changed) does to the projection what registering that Dataplane again
does: its time comes (what falls due by it goes), the Dataplane's row gets the new readiness,
version and modification time, and what is derived from the Dataplane is marked stale (the
MeshServices selecting it, those of its services, its identity); its generated MeshServices
stay as they are, as their ports and provenance do not change. When a later event of the
same subject is in the batch, all of that but the time is done again or made moot before
anything reads it: the later event replaces the row, and marks what is derived from the
same Dataplane, or what changed that in between marked itself (a MeshService applied, the
mesh's trust); endpoints and status are derived once per batch, from the rows at its end.
So such a change is folded as its time only (`fold.pass_time`), read for its time and names:
no decode, no row. Nearly half of a busy log is such flips; folding them was most of a
rebuild's time (docs/benchmarks.md, Rebuild).

It is folded so only when

- the record is of this log's own zone (other zones' and global's go their own ways),
- of the current schema version, and its time and names decode,
- the state's row of its Dataplane was written by the very event it is a readiness change of
  (the row's version is the header's sequence: nothing else wrote the row in between, and
  the row holds that event's Dataplane, labelled, which a readiness change differs from in
  readiness only), or by the event the subject's chain of such changes in this batch started
  from (each one a readiness change of the one before);

otherwise it is decoded and folded in full, as every other event. And the batch checks that
what it counted on happened: a row that no later event replaced after all (the event that
was to replace it could not be read and the projector stops in front of it, or an operator
skipped it, or a writer past the API put another kind of event on the subject) becomes the
one folding the subject's last such change makes, with its marks, decoded then
(`BatchReadiness.settle`, `fold.put_readiness`), before the batch is derived or committed.
Batch sizes never change the rows (invariant 4): `tests/projections/test_fold.py` folds
random histories at random batch sizes and restarts through this path, against one event per
batch, and `tests/projections/test_readiness.py` each way it may not apply.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Literal, NamedTuple

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
from projections.fold import pass_time, put_readiness
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


class _Chain(NamedTuple):
    """A subject's readiness changes folded as their time in this batch, one after the
    other."""

    key: str
    """Its Dataplane's row (`dp_key`)."""
    root: int
    """The version of that row when the first of them was folded: the event they are
    readiness changes of."""
    last: Record
    """The last of them."""


class BatchReadiness:
    """The readiness changes of one batch that a later event of their subject replaces, and
    those of them folded as their time only (`fold`), until `settle` checks they were
    replaced."""

    def __init__(self, batch: Sequence[Record], skipped: Collection[int] = ()) -> None:
        self.replaced: frozenset[int] = frozenset()
        """Sequences of the readiness changes a later event of their subject replaces (an
        event an operator decided to skip replaces nothing)."""
        self._chains: dict[str, _Chain] = {}
        """By subject."""
        changes = [record for record in batch if record.readiness_of]
        if not changes:
            return
        last = ({record.subject: record.seq for record in batch} if not skipped else
                {record.subject: record.seq for record in batch if record.seq not in skipped})
        self.replaced = frozenset(record.seq for record in changes
                                  if last.get(record.subject, record.seq) > record.seq)

    def fold(self, state: ProjectionState, record: Record) -> bool:
        """Fold `record` as its time if it is a replaced readiness change and that is exact;
        False (nothing done): fold it in full."""
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
        if row is None:
            return False
        chain = self._chains.get(record.subject)
        if (chain is not None and chain.key == key and row.meta.version == chain.root
                and record.readiness_of == chain.last.seq):
            root = chain.root  # a readiness change of the one folded before
        elif row.meta.version == record.readiness_of:
            root = record.readiness_of
        else:
            return False
        pass_time(state, stamp.at)
        self._chains[record.subject] = _Chain(key, root, record)
        return True

    def settle(self, state: ProjectionState) -> None:
        """Make each row that changes were folded as their time of, and that no later event
        replaced, what folding the last of them leaves; raise `UnreadableReadiness` if that
        one cannot be read. Before the state is derived or committed, and before the
        projector stops in front of an event (what it commits, or folds on from, is the fold
        up to the event before)."""
        chains, self._chains = self._chains, {}
        for chain in chains.values():
            row = state.dataplane_at(chain.key)
            if row is None or row.meta.version != chain.root:
                continue  # replaced, as it was to be
            record = chain.last
            try:
                event = decode_event(record.data, seq=record.seq, subject=record.subject)
            except UndecodableEvent as exc:
                raise UnreadableReadiness(record, exc.reason) from exc
            if type(event) is not DataplaneRegistered:
                raise UnreadableReadiness(record, "it says it is a readiness change, and "
                                          f"is {type(event).__name__}")
            put_readiness(state, record.seq, event, provenance_of(record.subject))
